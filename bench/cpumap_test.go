package bench

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/afxdp/afxdp/internal/app"
	"github.com/afxdp/afxdp/internal/rawtp"
	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/afxdp/afxdp/xsk"
)

// steering moves the AF_XDP copy of a veth receiver off the CPU that feeds
// the veth and onto another: an XDP program on the receiving end redirects
// every frame into a CPUMAP entry for that CPU, whose kernel thread runs a
// second program that redirects the frame into the socket's XSKMAP. The
// copy into the UMEM then happens in that thread (xsk_rcv is reached from
// the cpumap's xdp_do_redirect), not in the softirq of the generator's CPU.
//
// Frames the CPUMAP queue had no room for are dropped without a trace in
// any interface counter, so both programs count: counts[0] the frames the
// first program steered, counts[1] those that reached the CPU's thread;
// and a third program, on the xdp:xdp_cpumap_enqueue raw tracepoint (no
// tracefs needed), adds up in counts[2] the frames the kernel dropped as
// it moved them into the queue.
type steering struct {
	xsks, cpus, counts     *ebpf.Map
	steer, deliver, traced *ebpf.Program
	lnk, tp                link.Link
}

// steerQueue is the CPUMAP entry's queue: frames in flight between the two
// CPUs, at most.
const steerQueue = 8192

// countAndRedirect counts the frame in counts[key], then redirects it to
// entry target of m.
func countAndRedirect(counts *ebpf.Map, key int32, m *ebpf.Map, target int32) asm.Instructions {
	return asm.Instructions{
		asm.StoreImm(asm.R10, -4, int64(key), asm.Word),
		asm.LoadMapPtr(asm.R1, counts.FD()),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "redirect"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.LoadMapPtr(asm.R1, m.FD()).WithSymbol("redirect"),
		asm.Mov.Imm(asm.R2, target),
		asm.Mov.Imm(asm.R3, 0), // no entry: XDP_ABORTED, which shows in the tracepoint
		asm.FnRedirectMap.Call(),
		asm.Return(),
	}
}

// countEnqueueDrops adds the drops that xdp:xdp_cpumap_enqueue reports for
// the CPUMAP mapID to counts[2]. It is a raw tracepoint program: it reads
// the tracepoint's arguments map_id and drops, which the kernel's BTF puts
// at offMapID and offDrops of its context (see package rawtp), as u64s
// holding 32-bit values.
func countEnqueueDrops(counts *ebpf.Map, mapID uint32, offMapID, offDrops int16) asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, offMapID, asm.DWord),
		asm.JNE.Imm32(asm.R2, int32(mapID), "out"),
		asm.LoadMem(asm.R6, asm.R1, offDrops, asm.DWord),
		asm.Mov.Reg32(asm.R6, asm.R6), // the 32-bit count, zero-extended
		asm.JEq.Imm(asm.R6, 0, "out"),
		asm.StoreImm(asm.R10, -4, 2, asm.Word),
		asm.LoadMapPtr(asm.R1, counts.FD()),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.StoreXAdd(asm.R0, asm.R6, asm.DWord),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	}
}

// newSteering sets it up on t's peer end for s (bound to queue 0 there,
// registered nowhere), steering to cpu. The caller closes it.
func newSteering(t *app.Topology, s *xsk.Socket, cpu int) (_ *steering, err error) {
	st := &steering{}
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("steer %s to CPU %d: %w", t.Veth.Peer.Name, cpu, err), st.Close())
		}
	}()
	if st.xsks, err = ebpf.NewMap(&ebpf.MapSpec{Name: "steer_xsks", Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: 1}); err != nil {
		return nil, err
	}
	if err = st.xsks.Put(uint32(0), uint32(s.FD())); err != nil {
		return nil, fmt.Errorf("register socket: %w", err)
	}
	if st.counts, err = ebpf.NewMap(&ebpf.MapSpec{Name: "steer_counts", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 3}); err != nil {
		return nil, err
	}
	st.deliver, err = ebpf.NewProgram(&ebpf.ProgramSpec{Name: "steer_deliver", Type: ebpf.XDP, AttachType: ebpf.AttachXDPCPUMap,
		License: "Dual MIT/GPL", Instructions: countAndRedirect(st.counts, 1, st.xsks, 0)})
	if err != nil {
		return nil, fmt.Errorf("load cpumap program: %w", err)
	}
	if st.cpus, err = ebpf.NewMap(&ebpf.MapSpec{Name: "steer_cpus", Type: ebpf.CPUMap, KeySize: 4, ValueSize: 8,
		MaxEntries: uint32(cpu + 1)}); err != nil {
		return nil, err
	}
	// struct bpf_cpumap_val: the queue size, then the program's fd.
	if err = st.cpus.Put(uint32(cpu), [2]uint32{steerQueue, uint32(st.deliver.FD())}); err != nil {
		return nil, fmt.Errorf("add CPU %d to the cpumap: %w", cpu, err)
	}
	info, err := st.cpus.Info()
	if err != nil {
		return nil, fmt.Errorf("cpumap info: %w", err)
	}
	id, ok := info.ID()
	if !ok {
		return nil, errors.New("cpumap info: no map id")
	}
	offs, err := rawtp.KernelOffsets("xdp:xdp_cpumap_enqueue", rawtp.Int32("map_id"), rawtp.Int32("drops"))
	if err != nil {
		return nil, err
	}
	st.traced, err = ebpf.NewProgram(&ebpf.ProgramSpec{Name: "steer_drops", Type: ebpf.RawTracepoint,
		License: "Dual MIT/GPL", Instructions: countEnqueueDrops(st.counts, uint32(id), offs[0], offs[1])})
	if err != nil {
		return nil, fmt.Errorf("load program for xdp:xdp_cpumap_enqueue: %w", err)
	}
	if st.tp, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: "xdp_cpumap_enqueue", Program: st.traced}); err != nil {
		return nil, fmt.Errorf("attach to xdp:xdp_cpumap_enqueue: %w", err)
	}
	st.steer, err = ebpf.NewProgram(&ebpf.ProgramSpec{Name: "steer_to_cpu", Type: ebpf.XDP,
		License: "Dual MIT/GPL", Instructions: countAndRedirect(st.counts, 0, st.cpus, int32(cpu))})
	if err != nil {
		return nil, fmt.Errorf("load steering program: %w", err)
	}
	err = t.Veth.Peer.Do(func() (err error) {
		st.lnk, err = link.AttachXDP(link.XDPOptions{Program: st.steer, Interface: t.Veth.Peer.Index, Flags: link.XDPDriverMode})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("attach: %w", err)
	}
	return st, nil
}

// lost is the number of frames steered that did not reach the target CPU's
// thread (as of now: frames still queued between the CPUs count too, at
// most steerQueue).
func (st *steering) lost() (uint64, error) {
	var steered, arrived uint64
	if err := st.counts.Lookup(uint32(0), &steered); err != nil {
		return 0, err
	}
	if err := st.counts.Lookup(uint32(1), &arrived); err != nil {
		return 0, err
	}
	return steered - arrived, nil
}

// dropped is the number of frames the kernel dropped for want of room in
// the CPUMAP queue: unlike lost, it counts no frame still in the queue,
// and it never goes back.
func (st *steering) dropped() (uint64, error) {
	var n uint64
	err := st.counts.Lookup(uint32(2), &n)
	return n, err
}

// Close detaches and frees everything, the links first.
func (st *steering) Close() error {
	var errs []error
	for _, l := range []link.Link{st.lnk, st.tp} {
		if l != nil {
			errs = append(errs, l.Close())
		}
	}
	// Close on a nil program or map does nothing.
	for _, c := range []interface{ Close() error }{st.steer, st.traced, st.cpus, st.deliver, st.counts, st.xsks} {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// openSteered opens a socket registered nowhere on t's peer end and steers
// the peer's frames into it through loopCPU.
func openSteered(tb testing.TB, t *app.Topology, c *app.Config) (*xsk.Socket, *steering) {
	tb.Helper()
	o := c.XSKOptions()
	o.NoXDP = true
	var s *xsk.Socket
	if err := t.Veth.Peer.Do(func() (err error) {
		s, err = xsk.Open(t.Veth.Peer.Name, 0, o)
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	st, err := newSteering(t, s, loopCPU)
	if err != nil {
		s.Close()
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := errors.Join(st.Close(), s.Close()); err != nil {
			tb.Error(err)
		}
	})
	return s, st
}

// BenchmarkRxDropCPUMap is BenchmarkRxDrop with the AF_XDP copy steered to
// the receiver's CPU through a CPUMAP (see steering), the XDP way of taking
// work off the generator's CPU, which bounds every receiver on veth. drops
// counts the socket's drops and the frames the CPUMAP queue dropped.
func BenchmarkRxDropCPUMap(b *testing.B) {
	t := topology(b, app.TopologyOptions{Generator: true})
	for _, w := range []app.WaitMode{app.WaitSpin, app.WaitNap} {
		b.Run("wait="+w.String(), func(b *testing.B) {
			c := config(64, 2048)
			c.Wait = w
			s, st := openSteered(b, t, c)
			l := app.NewLoop(s, c)
			benchRecv(b, t, recvPath{
				recv:  l.RxDrop,
				drops: steeredDrops(b, s, st),
				stop:  func() { l.Stop.Store(true) },
			})
		})
	}
}

// steeredDrops counts what was dropped on the way into s through st: by
// the CPUMAP queue and by the socket.
func steeredDrops(tb testing.TB, s *xsk.Socket, st *steering) func() uint64 {
	sockDrops := xskDrops(tb, s)
	return func() uint64 {
		n, err := st.dropped()
		if err != nil {
			tb.Fatal(err)
		}
		return n + sockDrops()
	}
}

// TestCPUMapDropsOnlyGrow checks that BenchmarkRxDropCPUMap's drop count
// never goes back while frames stream through the CPUMAP: the benchmark
// reports the difference of two readings, and a count that fell between
// them would show as 2^64 drops.
func TestCPUMapDropsOnlyGrow(t *testing.T) {
	testenv.RequirePrivileged(t)
	topo := topology(t, app.TopologyOptions{Generator: true})
	c := config(64, 2048)
	c.Wait = app.WaitNap
	s, st := openSteered(t, topo, c)
	drops := steeredDrops(t, s, st)
	l, done := startRxDrop(s, c)
	gen, err := topo.StartGenerator(genCPU)
	if err != nil {
		l.Stop.Store(true)
		<-done
		t.Fatal(err)
	}
	var d0, fell uint64
	var readings int
	for deadline := time.Now().Add(300 * time.Millisecond); time.Now().Before(deadline); readings++ {
		if d := drops(); d < d0 {
			fell++
			t.Errorf("drops went back from %d to %d", d0, d)
		} else {
			d0 = d
		}
		time.Sleep(200 * time.Microsecond)
	}
	_, gerr := gen.Stop()
	l.Stop.Store(true)
	if err := errors.Join(gerr, <-done); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d readings, %d went back; %d drops, %d frames received", readings, fell, d0, l.C.RxPackets.Load())
	if l.C.RxPackets.Load() == 0 {
		t.Fatal("no frame reached the socket through the cpumap")
	}
}

// TestCPUMapSteeringAccountsForEveryFrame checks the steering that
// BenchmarkRxDropCPUMap measures: every generated frame is received by
// the socket, dropped by the kernel on the way into it, lost in the
// CPUMAP queue, or dropped by veth before the steering program saw it,
// and the received ones are real (counted and sized).
//
// It runs a second time with the peer's NAPI poll in a kernel thread, as
// it is in effect on a loaded machine, where the poll is deferred to
// ksoftirqd while the generator goes on: veth then drops what its ring
// cannot hold.
func TestCPUMapSteeringAccountsForEveryFrame(t *testing.T) {
	testenv.RequirePrivileged(t)
	for _, threaded := range []bool{false, true} {
		name := "softirq"
		if threaded {
			name = "threaded-napi"
		}
		t.Run(name, func(t *testing.T) { testSteeringAccounts(t, threaded) })
	}
}

func testSteeringAccounts(t *testing.T, threaded bool) {
	topo := topology(t, app.TopologyOptions{Generator: true})
	if threaded {
		if err := app.SetVethThreadedNAPI(topo.Veth.Peer, true); err != nil {
			t.Fatal(err)
		}
	}
	c := config(64, 2048)
	s, st := openSteered(t, topo, c)
	// What veth drops for a full XDP ring on the peer counts in the host
	// end's tx_dropped, and nothing else on this pair does.
	h0 := counters(t, topo.Veth.Host)
	l, done := startRxDrop(s, c)
	const n = 200_000
	sent, err := topo.Gen.Send(n)
	if err != nil {
		l.Stop.Store(true)
		<-done
		t.Fatal(err)
	}
	// Wait until the counts stop moving: everything in flight has landed.
	var got, lost, dropped, overflow uint64
	for deadline := time.Now().Add(10 * time.Second); ; {
		time.Sleep(50 * time.Millisecond)
		g := l.C.RxPackets.Load()
		if lost, err = st.lost(); err != nil {
			t.Fatal(err)
		}
		stats, err := s.Stats()
		if err != nil {
			t.Fatal(err)
		}
		dropped = stats.RxRingFull + stats.RxDropped
		overflow = counters(t, topo.Veth.Host).Sub(h0).TxDropped
		if g == got && g+lost+dropped+overflow == sent || time.Now().After(deadline) {
			got = g
			break
		}
		got = g
	}
	l.Stop.Store(true)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// With nothing left in the queue, what it lost is what the kernel
	// said it dropped, which is what BenchmarkRxDropCPUMap counts.
	enq, err := st.dropped()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sent %d: received %d, dropped by the socket %d, lost in the cpumap %d (%d by the tracepoint), dropped by veth %d",
		sent, got, dropped, lost, enq, overflow)
	if enq != lost {
		t.Errorf("xdp:xdp_cpumap_enqueue counted %d frames dropped, the programs %d steered that never arrived", enq, lost)
	}
	if sent != n {
		t.Fatalf("generator sent %d frames, want %d", sent, n)
	}
	if got == 0 {
		t.Fatal("no frame reached the socket through the cpumap")
	}
	if got+lost+dropped+overflow != sent {
		t.Errorf("received %d + dropped %d + lost in the cpumap %d + dropped by veth %d = %d, want the %d sent",
			got, dropped, lost, overflow, got+lost+dropped+overflow, sent)
	}
	if b := l.C.RxBytes.Load(); b != got*frameLen {
		t.Errorf("received %d bytes in %d frames, want %d bytes each", b, got, frameLen)
	}
}

// startRxDrop runs an rxdrop loop on s, pinned to loopCPU, until its Stop
// is set; done gets the loop's error.
func startRxDrop(s *xsk.Socket, c *app.Config) (*app.Loop, <-chan error) {
	l := app.NewLoop(s, c)
	done := make(chan error, 1)
	go func() {
		unpin, err := app.PinThread(loopCPU)
		if err != nil {
			done <- err
			return
		}
		defer unpin()
		_, err = l.RxDrop(0)
		done <- err
	}()
	return l, done
}
