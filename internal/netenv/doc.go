// Package netenv builds throwaway network topologies — network namespaces,
// veth pairs, macvlan, ipvlan and VXLAN links — for afxdp's tests, examples
// and benchmarks, and tears them down again.
//
// Every object has a Close method that removes what it made. Anonymous
// namespaces (the default) disappear with the process even when it is killed,
// taking their links with them; named ones (visible to `ip netns exec`, which
// external peers such as dpdk-testpmd need) are removed by Close.
//
// netenv needs CAP_NET_ADMIN and CAP_SYS_ADMIN. It is internal: it exists so
// that every privileged test and example builds its network the same way.
package netenv
