package testenv

import (
	"flag"
	"testing"
)

// BenchOnce runs fn as a benchmark of one b.Loop iteration, as CI's
// -benchtime=1x does, and reports whether it passed (ran its one
// iteration). It must not run in parallel with another test that sets
// -test.benchtime.
func BenchOnce(tb testing.TB, fn func(b *testing.B)) (testing.BenchmarkResult, bool) {
	tb.Helper()
	f := flag.Lookup("test.benchtime")
	old := f.Value.String()
	if err := f.Value.Set("1x"); err != nil {
		tb.Fatal(err)
	}
	defer f.Value.Set(old)
	r := testing.Benchmark(fn)
	return r, r.N == 1
}
