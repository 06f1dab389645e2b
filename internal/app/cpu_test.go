package app

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/sys"
)

// affinities returns every thread's CPU set but skip's.
func affinities(t *testing.T, skip int) map[int]unix.CPUSet {
	t.Helper()
	tids, err := sys.ThreadIDs()
	if err != nil {
		t.Fatal(err)
	}
	m := map[int]unix.CPUSet{}
	for _, tid := range tids {
		var s unix.CPUSet
		if err := unix.SchedGetaffinity(tid, &s); err == nil && tid != skip {
			m[tid] = s
		}
	}
	return m
}

// firstOfTwoCPUs returns the CPUs this process may run on and the first
// of them; it skips the test when there are fewer than two.
func firstOfTwoCPUs(t *testing.T) (all unix.CPUSet, cpu int) {
	t.Helper()
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	if all.Count() < 2 {
		t.Skip("needs two CPUs")
	}
	for cpu = 0; !all.IsSet(cpu); cpu++ {
	}
	return all, cpu
}

// TestKeepOffCPU checks what the run loops rely on: called from a thread
// already pinned to a CPU, KeepOffCPU moves every other thread, and those
// the runtime makes afterwards, off that CPU, and restore gives the CPU
// back to them all.
func TestKeepOffCPU(t *testing.T) {
	all, cpu := firstOfTwoCPUs(t)

	type result struct {
		self       int
		mine       unix.CPUSet
		off, after map[int]unix.CPUSet
		back       map[int]unix.CPUSet
		keep, undo error
	}
	var r result
	done := make(chan struct{})
	go func() {
		defer close(done)
		unpin, err := PinThread(cpu)
		if err != nil {
			r.keep = err
			return
		}
		defer unpin()
		r.self = unix.Gettid()
		restore, err := KeepOffCPU(cpu)
		if err != nil {
			r.keep = err
			return
		}
		r.off = affinities(t, r.self)
		// Make the runtime start threads: goroutines blocked in
		// system calls hand their Ps to new ones.
		var wg sync.WaitGroup
		for range 2 * runtime.GOMAXPROCS(0) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ts := unix.NsecToTimespec((20 * time.Millisecond).Nanoseconds())
				unix.Nanosleep(&ts, nil)
			}()
		}
		wg.Wait()
		r.after = affinities(t, r.self)
		unix.SchedGetaffinity(0, &r.mine)
		r.undo = restore()
		r.back = affinities(t, r.self)
	}()
	<-done
	if r.keep != nil {
		t.Fatal(r.keep)
	}
	if r.undo != nil {
		t.Fatal(r.undo)
	}
	if r.mine.Count() != 1 || !r.mine.IsSet(cpu) {
		t.Errorf("the calling thread's CPUs changed: want only %d", cpu)
	}
	if len(r.after) <= len(r.off) {
		t.Logf("no new threads were made (%d before, %d after)", len(r.off), len(r.after))
	}
	for name, m := range map[string]map[int]unix.CPUSet{"moved": r.off, "made later": r.after} {
		if len(m) == 0 {
			t.Fatalf("%s: no other threads to look at", name)
		}
		for tid, s := range m {
			if s.IsSet(cpu) || s.Count() == 0 {
				t.Errorf("%s: thread %d may run on %d CPUs, cpu %d among them=%v; want it kept off", name, tid, s.Count(), cpu, s.IsSet(cpu))
			}
		}
	}
	for tid, s := range r.back {
		if s != all {
			t.Errorf("after restore: thread %d has %d CPUs, want the process's %d", tid, s.Count(), all.Count())
		}
	}
}

func TestKeepOffCPUBadCPU(t *testing.T) {
	for _, cpu := range []int{-1, 1 << 20} {
		if _, err := KeepOffCPU(cpu); err == nil {
			t.Errorf("KeepOffCPU(%d): no error", cpu)
		}
	}
}

// TestKeepOffCPUKeepsOtherPins checks that a thread pinned to another CPU
// (a traffic generator's, as RunOn starts one before its loop) keeps its
// pin while a run loop keeps the other threads off its own CPU, and after
// restore.
func TestKeepOffCPUKeepsOtherPins(t *testing.T) {
	all, err := sys.AllowedCPUSet()
	if err != nil {
		t.Fatal(err)
	}
	if all.Count() < 2 {
		t.Skip("needs two CPUs")
	}
	var cpus []int
	for i := 0; len(cpus) < 2; i++ {
		if all.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	loopCPU, genCPU := cpus[0], cpus[1]

	pinned := make(chan int)
	release := make(chan struct{})
	genDone := make(chan struct{})
	go func() {
		defer close(genDone)
		unpin, err := PinThread(genCPU)
		if err != nil {
			t.Error(err)
			close(pinned)
			return
		}
		defer unpin()
		pinned <- unix.Gettid()
		<-release
	}()
	gen, ok := <-pinned
	if !ok {
		return
	}
	defer func() { close(release); <-genDone }()

	var during, after unix.CPUSet
	var keepErr, undoErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		unpin, err := PinThread(loopCPU)
		if err != nil {
			keepErr = err
			return
		}
		defer unpin()
		restore, err := KeepOffCPU(loopCPU)
		if err != nil {
			keepErr = err
			return
		}
		unix.SchedGetaffinity(gen, &during)
		undoErr = restore()
		unix.SchedGetaffinity(gen, &after)
	}()
	<-done
	if keepErr != nil || undoErr != nil {
		t.Fatal(keepErr, undoErr)
	}
	var want unix.CPUSet
	want.Set(genCPU)
	if during != want {
		t.Errorf("while kept off cpu %d: the thread pinned to cpu %d may run on %d CPUs", loopCPU, genCPU, during.Count())
	}
	if after != want {
		t.Errorf("after restore: the thread pinned to cpu %d may run on %d CPUs", genCPU, after.Count())
	}
}

// TestThreadCPUOfIsProcessClock checks that another thread's CPU time is
// read exactly and on the process's clock: a thread that spun for 50 ms
// shows at least that much, and never more than the whole process used
// over the same span, which is what lets the run loops take a generator's
// CPU out of the process's without going negative.
func TestThreadCPUOfIsProcessClock(t *testing.T) {
	tid := make(chan int)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tid <- unix.Gettid()
		for {
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	id := <-tid
	defer func() { close(stop); <-done }()
	p0 := ProcessCPU()
	t0, err := ThreadCPUOf(id)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	t1, err := ThreadCPUOf(id)
	if err != nil {
		t.Fatal(err)
	}
	p1 := ProcessCPU()
	thread, process := t1-t0, p1-p0
	if thread < 10*time.Millisecond || thread > process {
		t.Fatalf("a thread spinning for 50 ms used %v; the process %v over a span that holds it", thread, process)
	}
	if thread%(10*time.Millisecond) == 0 {
		t.Errorf("thread CPU time %v: a whole number of clock ticks, not the scheduler's clock", thread)
	}
	if _, err := ThreadCPUOf(1 << 23); err == nil { // beyond PID_MAX_LIMIT
		t.Error("ThreadCPUOf of a thread that does not exist: no error")
	}
}

// TestKeepOffCPUWhileThreadsAreMade calls KeepOffCPU while the runtime
// makes and ends threads all the time: a thread made during a pass by one
// not yet moved inherits the CPU, and the pass may have listed the threads
// before it existed. No thread may be left on the CPU when KeepOffCPU
// returns (one pass left such a thread in about one call in a hundred
// here), nor, after restore, with the affinity it was given (the same race
// the other way), where TestKeepOffCPU, run after it, would find it.
func TestKeepOffCPUWhileThreadsAreMade(t *testing.T) {
	all, cpu := firstOfTwoCPUs(t)
	// A goroutine that ends locked to its thread ends the thread too, so
	// the runtime keeps making new ones.
	stop := make(chan struct{})
	var churn sync.WaitGroup
	for range 2 {
		churn.Add(1)
		go func() {
			defer churn.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				done := make(chan struct{})
				go func() {
					defer close(done)
					runtime.LockOSThread()
				}()
				<-done
			}
		}()
	}
	defer func() { close(stop); churn.Wait() }()

	for round := range 50 {
		errc := make(chan error, 1)
		go func() {
			unpin, err := PinThread(cpu)
			if err != nil {
				errc <- err
				return
			}
			defer unpin()
			self := unix.Gettid()
			restore, err := KeepOffCPU(cpu)
			if err != nil {
				errc <- err
				return
			}
			var left []int
			for tid, s := range affinities(t, self) {
				if s.IsSet(cpu) {
					left = append(left, tid)
				}
			}
			if err := restore(); err != nil {
				errc <- err
				return
			}
			if len(left) > 0 {
				errc <- fmt.Errorf("round %d: threads %v may still run on cpu %d", round, left, cpu)
				return
			}
			for tid, s := range affinities(t, self) {
				if s != all {
					errc <- fmt.Errorf("round %d: after restore, thread %d has %d CPUs; want the process's %d", round, tid, s.Count(), all.Count())
					return
				}
			}
			errc <- nil
		}()
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
}
