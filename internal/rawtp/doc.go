// Package rawtp finds the arguments of a kernel tracepoint as a raw
// tracepoint program (BPF_PROG_TYPE_RAW_TRACEPOINT, attached by name with
// BPF_RAW_TRACEPOINT_OPEN) sees them, so that such a program needs neither
// tracefs nor a record layout written down by hand.
//
// A raw tracepoint program runs on the tracepoint's arguments themselves,
// not on the record a classic tracepoint program reads: its context is an
// array of u64, one per argument of the tracepoint's TP_PROTO, in order.
// The kernel's BTF names those arguments: for every tracepoint it holds a
// function __traceiter_<name> whose first parameter is __data and whose
// others are the tracepoint's arguments, so argument i (from 0) is the u64
// at byte 8*i of the context. An argument narrower than 64 bits fills the
// low bits of its u64 and the rest are zero (an int is not sign-extended),
// so a program reads it whole and uses 32-bit operations on it.
//
// [Offsets] looks arguments up by name in a BTF spec, checking that each
// has the type the program expects; [KernelOffsets] does so in the running
// kernel's BTF, which it loads once per process ([Kernel]). [Int32Member]
// finds a field of a struct that an argument points to, for the program
// to read with bpf_probe_read_kernel.
package rawtp
