// Package stale names what bench/cmd's commands leave on disk (temporary
// directories, network namespaces, DPDK's runtime directories) after the
// process that makes it, so that a later run can tell what a run killed
// outright (SIGKILL), with no chance to clean up, left behind, and remove
// it. Package child sees to the processes such a run started.
//
// A pid tells only whether the process that made a name is gone, not
// whether a live run is about to use what looks left over (compare's
// /var/run/dpdk): the commands call RemoveStale only once they hold the
// lock of package onerun, while no other of them runs.
package stale

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
)

// Owner is one command's way of naming what it makes: a prefix, then the
// process's pid, then, if anything, a dash and the rest (afxcmp1234,
// afxcmp1234-cref567).
type Owner struct {
	command, prefix string
	re              *regexp.Regexp
}

// New returns the Owner of command's names (command as messages name it:
// "compare"), which start with prefix ("afxcmp"). A prefix must not be
// another command's prefix followed by digits.
func New(command, prefix string) *Owner {
	return &Owner{command: command, prefix: prefix,
		re: regexp.MustCompile(`^` + regexp.QuoteMeta(prefix) + `([0-9]+)(-|$)`)}
}

// Name is what this process's names start with: the prefix followed by
// its pid.
func (o *Owner) Name() string { return o.prefix + strconv.Itoa(os.Getpid()) }

// Gone reports whether name is one that Name made in a process that is
// gone: not this process, and not one that the kernel knows (a pid taken
// again since keeps what it names until that process is gone too).
func (o *Owner) Gone(name string) bool {
	m := o.re.FindStringSubmatch(name)
	if m == nil {
		return false
	}
	pid, err := strconv.Atoi(m[1])
	return err == nil && pid > 0 && pid != os.Getpid() && errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// Place is a directory where the command leaves things named after it.
type Place struct {
	Dir  string
	What string // what the entries are, for messages: "namespace"
	// Remove removes the entry name; nil means os.RemoveAll of its
	// path.
	Remove func(name string) error
}

// RemoveStale removes the entries of each place that Gone says a process
// that is gone made. It says on w what it removed, and what it failed to
// remove, and goes on; a place that cannot be read has nothing to remove.
// It returns the paths it removed.
func (o *Owner) RemoveStale(w io.Writer, places ...Place) []string {
	var removed []string
	for _, p := range places {
		ents, err := os.ReadDir(p.Dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if !o.Gone(e.Name()) {
				continue
			}
			path := filepath.Join(p.Dir, e.Name())
			if p.Remove != nil {
				err = p.Remove(e.Name())
			} else {
				err = os.RemoveAll(path)
			}
			if err != nil {
				fmt.Fprintf(w, "%s: remove %s %s, left by a %s that is gone: %v\n", o.command, p.What, path, o.command, err)
				continue
			}
			fmt.Fprintf(w, "%s: removed %s %s, left by a %s that is gone\n", o.command, p.What, path, o.command)
			removed = append(removed, path)
		}
	}
	return removed
}
