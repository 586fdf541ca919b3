package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// progress shows how far the current phase of the check is: one line
// rewritten in place on a terminal, a line every half second otherwise.
type progress struct {
	w   io.Writer
	tty bool

	mu          sync.Mutex
	phase       string
	done, total int
	shown       int // done when last printed
	began       time.Time
	ticker      *time.Ticker
	stop        chan struct{}
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
	term := w
	if lw, ok := w.(*lockedWriter); ok {
		term = lw.w
	}
	if f, ok := term.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

// start begins a phase of total steps.
func (p *progress) start(phase string, total int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.phase, p.done, p.total, p.shown, p.began = phase, 0, total, 0, time.Now()
	if p.tty {
		p.print()
	}
	p.ticker, p.stop = time.NewTicker(500*time.Millisecond), make(chan struct{})
	go p.tick(p.ticker, p.stop)
}

func (p *progress) tick(t *time.Ticker, stop chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			p.mu.Lock()
			if p.done != p.shown {
				p.print()
			}
			p.mu.Unlock()
		}
	}
}

// add counts one step done.
func (p *progress) add() {
	p.mu.Lock()
	p.done++
	p.mu.Unlock()
}

// end prints the phase's last count and how long it took.
func (p *progress) end() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stop == nil {
		return
	}
	p.ticker.Stop()
	close(p.stop)
	p.stop = nil
	took := time.Since(p.began).Round(time.Millisecond)
	if p.tty {
		p.print()
		fmt.Fprintf(p.w, " (%s)\n", took)
		return
	}
	fmt.Fprintf(p.w, "%s: %d/%d done in %s\n", p.phase, p.done, p.total, took)
}

func (p *progress) print() {
	p.shown = p.done
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%-20s %d/%d", p.phase, p.done, p.total)
		return
	}
	fmt.Fprintf(p.w, "%s: %d/%d\n", p.phase, p.done, p.total)
}
