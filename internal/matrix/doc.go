// Package matrix measures what container network topologies cost: between
// two network namespaces standing for two containers it builds each
// topology the way orchestrators build it (CNI plugins where one exists:
// ptp, bridge, macvlan, and ipvlan where the kernel has it; a veth pair; a
// VXLAN overlay on a veth underlay) and measures, over each, kernel UDP
// sockets, AF_PACKET and AF_XDP receiving, transmitting and answering
// requests. cmd/afxdp-matrix is its command line.
//
// Every cell is measured several times in alternating order; a cell
// reports medians and spread, the generator that fed it, the CPU its
// packets cost (getrusage of the working thread, /proc/stat for the
// kernel), round-trip percentiles, and where drops happened. Each cell is
// compared with the cell of the same path, mode and size on a baseline
// topology (default veth): the penalty is what the topology costs that
// path. An rx cell whose receiver was never saturated is marked as limited
// on the sending side, and left out of the comparisons across paths.
//
// All namespaces are anonymous, so the kernel removes them, with the links
// and XDP programs in them, when the process ends, even when it is killed;
// Run removes them as it goes. Nothing is created in the caller's
// namespace. On disk, the CNI plugins' IPAM stores live in TMPDIR
// (afxdp-cni-ipam-*): Run removes them with their topology, also when its
// context ends, but a process killed outright leaves them behind.
package matrix
