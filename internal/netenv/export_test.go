package netenv

// Stack is stack, for tests that need a link of a name they chose.
var Stack = stack

// ForgetSubnets empties the set of subnets RandomSubnet returned lately,
// for a test that needs one it may have returned before.
func ForgetSubnets() {
	handedOut.Lock()
	handedOut.m = nil
	handedOut.Unlock()
}

// VethOf is a Veth whose pair is host's: for a test that makes Close
// fail on an end that the kernel refuses to delete (a loopback).
func VethOf(host Endpoint) *Veth { return &Veth{Host: host, made: true} }
