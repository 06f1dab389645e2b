// rxdrop.c: the C reference receiver for bench/cmd/compare.
//
// It receives on one queue of an interface through an AF_XDP socket made
// with libxdp's xsk API (as DPDK's af_xdp driver and the kernel's xdpsock
// sample do, libxdp also loads its own redirect program), drops every
// frame and hands its buffer straight back to the fill ring, spinning
// when the RX ring is empty (the default of the C samples). Nothing here
// reads packet data. Ring sizes, batch size, frame size and UMEM size are
// the same as afxdp's rxdrop in compare, so the two differ only in the
// library and the language; only a ring's worth of the UMEM's frames
// circulates (see the priming below).
//
// Usage: rxdrop IFACE QUEUE CPU RING BATCH
//
// It prints "ready" once the socket is bound; on every SIGUSR1, and once
// more on SIGINT or SIGTERM before it exits (removing the socket and
// libxdp's program), a line "rx N dropped D ring_full F": frames received
// so far and the socket's drop counters (XDP_STATISTICS; D includes F and
// the drops for want of a frame in the fill ring).
//
// Build: gcc -O2 -o rxdrop rxdrop.c -lxdp -lbpf (Debian: gcc libxdp-dev
// libbpf-dev).
#define _GNU_SOURCE
#include <errno.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <xdp/xsk.h>

#define FRAME_SIZE 2048

static volatile sig_atomic_t report_due, stop_due;

static void on_usr1(int sig) { (void)sig; report_due = 1; }
static void on_stop(int sig) { (void)sig; stop_due = 1; }

static void report(int fd, unsigned long long total)
{
	struct xdp_statistics st;
	socklen_t len = sizeof(st);
	if (getsockopt(fd, SOL_XDP, XDP_STATISTICS, &st, &len))
		memset(&st, 0, sizeof(st));
	printf("rx %llu dropped %llu ring_full %llu\n", total,
	       (unsigned long long)st.rx_dropped + st.rx_ring_full, (unsigned long long)st.rx_ring_full);
	fflush(stdout);
}

static int die(const char *what, int err)
{
	fprintf(stderr, "rxdrop: %s: %s\n", what, strerror(err < 0 ? -err : err));
	return 1;
}

static long arg(const char *s, const char *name, long lo, long hi)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (*s == '\0' || *end != '\0' || v < lo || v > hi) {
		fprintf(stderr, "rxdrop: %s %s: want an integer in [%ld, %ld]\n", name, s, lo, hi);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: rxdrop IFACE QUEUE CPU RING BATCH\n");
		return 2;
	}
	const char *ifname = argv[1];
	int queue = arg(argv[2], "QUEUE", 0, 1 << 16);
	int cpu = arg(argv[3], "CPU", 0, CPU_SETSIZE - 1);
	unsigned ring = arg(argv[4], "RING", 64, 1 << 16);
	unsigned batch = arg(argv[5], "BATCH", 1, 1 << 16);
	if (ring & (ring - 1)) {
		fprintf(stderr, "rxdrop: RING %u: want a power of two\n", ring);
		return 2;
	}
	if (batch > ring) {
		fprintf(stderr, "rxdrop: BATCH %u: more than RING %u\n", batch, ring);
		return 2;
	}

	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		return die("sched_setaffinity", errno);

	signal(SIGUSR1, on_usr1);
	signal(SIGINT, on_stop);
	signal(SIGTERM, on_stop);

	size_t frames = 4 * (size_t)ring;
	size_t size = frames * FRAME_SIZE;
	void *area = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (area == MAP_FAILED)
		return die("mmap umem", errno);

	struct xsk_ring_prod fq;
	struct xsk_ring_cons cq, rx;
	struct xsk_umem *umem;
	struct xsk_umem_config ucfg = {
		.fill_size = ring,
		.comp_size = ring,
		.frame_size = FRAME_SIZE,
		.frame_headroom = 0,
	};
	int err = xsk_umem__create(&umem, area, size, &fq, &cq, &ucfg);
	if (err)
		return die("xsk_umem__create", err);

	struct xsk_socket *xsk;
	struct xsk_socket_config scfg = {
		.rx_size = ring,
		.tx_size = ring,
		.xdp_flags = XDP_FLAGS_DRV_MODE,
		.bind_flags = XDP_COPY | XDP_USE_NEED_WAKEUP,
	};
	// A socket closed on this queue just before leaves it busy until the
	// kernel's deferred release has run: retry for a while.
	for (int tries = 0;; tries++) {
		err = xsk_socket__create(&xsk, ifname, queue, umem, &rx, NULL, &scfg);
		if (err != -EBUSY || tries == 300)
			break;
		usleep(10000);
	}
	if (err)
		return die("xsk_socket__create", err);
	int fd = xsk_socket__fd(xsk);

	// Prime the fill ring with the first RING frames; the rest stay unused,
	// as every received frame goes straight back.
	uint32_t idx;
	if (xsk_ring_prod__reserve(&fq, ring, &idx) != ring)
		return die("prime fill ring", ENOSPC);
	for (unsigned i = 0; i < ring; i++)
		*xsk_ring_prod__fill_addr(&fq, idx + i) = (uint64_t)i * FRAME_SIZE;
	xsk_ring_prod__submit(&fq, ring);

	printf("ready\n");
	fflush(stdout);

	unsigned long long total = 0;
	while (!stop_due) {
		if (report_due) {
			report_due = 0;
			report(fd, total);
		}
		uint32_t rxi, fqi = 0;
		unsigned n = xsk_ring_cons__peek(&rx, batch, &rxi);
		if (n == 0) {
			if (xsk_ring_prod__needs_wakeup(&fq))
				recvfrom(fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
			continue;
		}
		while (xsk_ring_prod__reserve(&fq, n, &fqi) != n) {
			if (stop_due)
				break;
			if (xsk_ring_prod__needs_wakeup(&fq))
				recvfrom(fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
		}
		if (stop_due)
			break;
		for (unsigned i = 0; i < n; i++) {
			uint64_t addr = xsk_ring_cons__rx_desc(&rx, rxi + i)->addr;
			*xsk_ring_prod__fill_addr(&fq, fqi + i) = xsk_umem__extract_addr(addr);
		}
		xsk_ring_prod__submit(&fq, n);
		xsk_ring_cons__release(&rx, n);
		total += n;
	}

	report(fd, total);
	xsk_socket__delete(xsk);
	xsk_umem__delete(umem);
	munmap(area, size);
	return 0;
}
