package netenv

// Stack is stack, for tests that need a link of a name they chose.
var Stack = stack
