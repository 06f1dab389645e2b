package rawtp

import (
	"fmt"
	"strings"
	"sync"

	"github.com/cilium/ebpf/btf"
)

// Arg is an argument a program reads, by name, and what it must be.
type Arg struct {
	Name string
	// Struct is empty for a 4-byte integer or enum (signed or not), which
	// the program reads as the low 32 bits of its u64. Otherwise the
	// argument must be a pointer to the struct of that name (qualifiers
	// such as const allowed), which the program reads whole and
	// dereferences with bpf_probe_read_kernel.
	Struct string
}

// Int32 is an argument that must be a 4-byte integer or enum.
func Int32(name string) Arg { return Arg{Name: name} }

// PointerTo is an argument that must be a pointer to struct structName.
func PointerTo(name, structName string) Arg { return Arg{Name: name, Struct: structName} }

// Offsets returns, in the order of args, the byte offset in the context of
// a raw tracepoint program on tp ("group:name", as "xdp:xdp_redirect_err")
// of each argument, found by name among the parameters of the function
// __traceiter_<name> in spec, the kernel's BTF. It fails, naming the
// tracepoint and what is missing, when spec has no such function, when the
// function lacks an argument, or when an argument has another type.
// Missing functions and arguments wrap [btf.ErrNotFound].
func Offsets(spec *btf.Spec, tp string, args ...Arg) ([]int16, error) {
	_, name, ok := strings.Cut(tp, ":")
	if !ok || name == "" {
		return nil, fmt.Errorf("tracepoint %q: want group:name", tp)
	}
	iter := "__traceiter_" + name
	var fn *btf.Func
	if err := spec.TypeByName(iter, &fn); err != nil {
		return nil, fmt.Errorf("%s: no function %s in the kernel's BTF: %w", tp, iter, err)
	}
	proto, ok := fn.Type.(*btf.FuncProto)
	if !ok {
		return nil, fmt.Errorf("%s: %s in the kernel's BTF has no prototype", tp, iter)
	}
	params := proto.Params
	if len(params) == 0 || params[0].Name != "__data" {
		return nil, fmt.Errorf("%s: %s in the kernel's BTF does not start with __data", tp, iter)
	}
	params = params[1:]
	offs := make([]int16, 0, len(args))
	for _, a := range args {
		i := indexOf(params, a.Name)
		if i < 0 {
			return nil, fmt.Errorf("%s: no argument %q in the kernel's BTF (%s): %w", tp, a.Name, iter, btf.ErrNotFound)
		}
		if err := a.check(params[i].Type); err != nil {
			return nil, fmt.Errorf("%s: argument %q (%s): %w", tp, a.Name, iter, err)
		}
		offs = append(offs, int16(8*i))
	}
	return offs, nil
}

func indexOf(params []btf.FuncParam, name string) int {
	for i, p := range params {
		if p.Name == name {
			return i
		}
	}
	return -1
}

// check returns an error unless typ is what a says.
func (a Arg) check(typ btf.Type) error {
	switch t := btf.UnderlyingType(typ).(type) {
	case *btf.Int:
		if a.Struct == "" && t.Size == 4 {
			return nil
		}
	case *btf.Enum:
		if a.Struct == "" && t.Size == 4 {
			return nil
		}
	case *btf.Pointer:
		if s, ok := btf.UnderlyingType(t.Target).(*btf.Struct); ok && a.Struct != "" && s.Name == a.Struct {
			return nil
		}
	}
	want := "a 4-byte integer"
	if a.Struct != "" {
		want = "a pointer to struct " + a.Struct
	}
	return fmt.Errorf("is %s, want %s", describe(typ), want)
}

// describe names typ for an error message.
func describe(typ btf.Type) string {
	switch t := btf.UnderlyingType(typ).(type) {
	case *btf.Pointer:
		return "a pointer to " + describe(t.Target)
	case *btf.Struct:
		return "struct " + t.Name
	case *btf.Union:
		return "union " + t.Name
	case *btf.Int:
		return fmt.Sprintf("%s (%d bytes)", t.Name, t.Size)
	case *btf.Enum:
		return fmt.Sprintf("enum %s (%d bytes)", t.Name, t.Size)
	case *btf.Void:
		return "void"
	default:
		return fmt.Sprint(t)
	}
}

// Kernel returns the running kernel's BTF, loaded on the first call (the
// same spec, or the same error, afterwards). The spec is safe for
// concurrent use.
var Kernel = sync.OnceValues(func() (*btf.Spec, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, fmt.Errorf("load the kernel's BTF: %w", err)
	}
	return spec, nil
})

// KernelOffsets is [Offsets] in the running kernel's BTF.
func KernelOffsets(tp string, args ...Arg) ([]int16, error) {
	spec, err := Kernel()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tp, err)
	}
	return Offsets(spec, tp, args...)
}

// Int32Member returns the byte offset of member in struct structName,
// which a program that holds a pointer to the struct reads with
// bpf_probe_read_kernel, from spec, the kernel's BTF. The member must be
// a 4-byte integer or enum, not a bitfield. A member of an anonymous
// struct or union in the struct counts as the struct's own, as in C.
func Int32Member(spec *btf.Spec, structName, member string) (int32, error) {
	var s *btf.Struct
	if err := spec.TypeByName(structName, &s); err != nil {
		return 0, fmt.Errorf("struct %s: not in the kernel's BTF: %w", structName, err)
	}
	m, off, ok := findMember(s.Members, member)
	if !ok {
		return 0, fmt.Errorf("struct %s: no member %q in the kernel's BTF: %w", structName, member, btf.ErrNotFound)
	}
	if m.BitfieldSize != 0 || off%8 != 0 {
		return 0, fmt.Errorf("struct %s: member %q is a bitfield", structName, member)
	}
	if err := Int32(member).check(m.Type); err != nil {
		return 0, fmt.Errorf("struct %s: member %q: %w", structName, member, err)
	}
	return int32(off / 8), nil
}

// findMember returns the member called name among members, or among the
// members of their anonymous structs and unions, and its offset in bits.
func findMember(members []btf.Member, name string) (btf.Member, btf.Bits, bool) {
	for _, m := range members {
		if m.Name == name {
			return m, m.Offset, true
		}
		if m.Name != "" {
			continue
		}
		var inner []btf.Member
		switch t := btf.UnderlyingType(m.Type).(type) {
		case *btf.Struct:
			inner = t.Members
		case *btf.Union:
			inner = t.Members
		}
		if im, off, ok := findMember(inner, name); ok {
			return im, m.Offset + off, true
		}
	}
	return btf.Member{}, 0, false
}
