package sys_test

import (
	"runtime"
	"testing"

	"github.com/afxdp/afxdp/internal/sys"
)

func TestCPUList(t *testing.T) {
	for _, tc := range []struct {
		l    sys.CPUList
		want string
	}{
		{nil, ""},
		{sys.CPUList{1}, "1"},
		{sys.CPUList{0, 1, 2, 3}, "0-3"},
		{sys.CPUList{0, 2, 3, 4, 7}, "0,2-4,7"},
		{sys.CPUList{1, 3, 5}, "1,3,5"},
	} {
		if got := tc.l.String(); got != tc.want {
			t.Errorf("%v.String() = %q, want %q", []int(tc.l), got, tc.want)
		}
		for cpu := -1; cpu < 9; cpu++ {
			want := false
			for _, c := range tc.l {
				want = want || c == cpu
			}
			if got := tc.l.Contains(cpu); got != want {
				t.Errorf("%v.Contains(%d) = %v, want %v", []int(tc.l), cpu, got, want)
			}
		}
	}
	cpus, err := sys.AllowedCPUs()
	if err != nil {
		t.Fatal(err)
	}
	if len(cpus) == 0 || len(cpus) < runtime.NumCPU() {
		t.Errorf("AllowedCPUs = %s; runtime.NumCPU = %d", cpus, runtime.NumCPU())
	}
}
