package client

import (
	"container/list"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Defaults of the redirect memory ([Dialer.RememberRedirects]).
const (
	// DefaultRememberRedirects is how long the target of a redirect chain
	// is remembered when [Dialer.RememberRedirects] is 0.
	DefaultRememberRedirects = 10 * time.Minute
	// MaxRemembered is how many URLs a Dialer's memory holds; storing one
	// more forgets the one stored longest ago.
	MaxRemembered = 1024
)

// memory maps the URL a chain started from to where the chain ended, so the
// next dial of that URL can start there. It is shared by a Dialer and the
// copies Connect makes of it, hence always used through a pointer.
type memory struct {
	mu      sync.Mutex
	entries map[string]*list.Element // of *recalled
	order   list.List                // stored longest ago first
	max     int
	now     func() time.Time
}

// recalled is what a chain left for the next dial of its first URL.
type recalled struct {
	key    string
	target *url.URL // canonical, no user info; never modified, so shared
	url    string   // target.String()
	// dropped: credentials were dropped on the way there, so a dial
	// straight there sends none either (unless CheckRedirect adds them).
	dropped bool
	at      time.Time
}

func newMemory() *memory {
	return &memory{entries: make(map[string]*list.Element), max: MaxRemembered, now: time.Now}
}

// memory returns d's memory, creating it on first use; nil when
// RememberRedirects is negative. The pointer is written once, with a CAS,
// and Connect calls this before copying d, so every copy shares it; a plain
// pointer field (rather than an atomic.Pointer, which must not be copied)
// keeps Dialer copyable without go vet's copylocks complaint.
func (d *Dialer) memory() *memory {
	if d.RememberRedirects < 0 {
		return nil
	}
	if m := (*memory)(atomic.LoadPointer(&d.memo)); m != nil {
		return m
	}
	m := newMemory()
	if atomic.CompareAndSwapPointer(&d.memo, nil, unsafe.Pointer(m)) {
		return m
	}
	return (*memory)(atomic.LoadPointer(&d.memo))
}

// rememberFor is the memory's lifetime under d's settings.
func (d *Dialer) rememberFor() time.Duration {
	if d.RememberRedirects == 0 {
		return DefaultRememberRedirects
	}
	return d.RememberRedirects
}

// memoryKey is what a chain is remembered by: the URL first dialled, and the
// Host override when the caller sets one, since that routes too.
func memoryKey(first string, header http.Header) string {
	if h := header.Get("Host"); h != "" {
		return first + " Host:" + strings.ToLower(h)
	}
	return first
}

// get returns the entry for key if it was stored less than ttl ago.
func (m *memory) get(key string, ttl time.Duration) (recalled, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.entries[key]
	if !ok {
		return recalled{}, false
	}
	e := el.Value.(*recalled)
	if m.now().Sub(e.at) >= ttl {
		m.order.Remove(el)
		delete(m.entries, key)
		return recalled{}, false
	}
	return *e, true
}

// put remembers that a chain from key ended at target.
func (m *memory) put(key string, target *url.URL, targetURL string, dropped bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := *target
	e := &recalled{key: key, target: &t, url: targetURL, dropped: dropped, at: m.now()}
	if el, ok := m.entries[key]; ok {
		el.Value = e
		m.order.MoveToBack(el)
		return
	}
	m.entries[key] = m.order.PushBack(e)
	for m.order.Len() > max(m.max, 1) {
		old := m.order.Remove(m.order.Front()).(*recalled)
		delete(m.entries, old.key)
	}
}

// forget drops key's entry; when target is not empty, only if the entry
// still points there (another dial may have stored a newer one).
func (m *memory) forget(key, target string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.entries[key]
	if !ok || (target != "" && el.Value.(*recalled).url != target) {
		return
	}
	m.order.Remove(el)
	delete(m.entries, key)
}

// recall returns the remembered target of the chain's first URL, with the
// chain set to dial it: the header the chain would send there, the hop
// marked. nil when there is none or it may not be used: expired, a
// downgrade not allowed, no redirects followed at all, or CheckRedirect
// vetoes it (the first URL's server then decides, and the hook again).
func (c *chain) recall() *url.URL {
	if c.mem == nil || c.d.MaxHops < 0 {
		return nil
	}
	e, ok := c.mem.get(c.key, c.d.rememberFor())
	if !ok {
		return nil
	}
	t := e.target
	if c.first.Scheme == "wss" && t.Scheme == "ws" && !c.d.AllowDowngrade {
		return nil
	}
	// c.header is still the caller's, as no hop was dialled: a hook
	// that vetoes gets a copy to change.
	h := c.header
	if c.d.CheckRedirect != nil {
		h = h.Clone()
	}
	dropped := e.dropped || t.Scheme != c.first.Scheme || t.Host != c.first.Host
	if dropped {
		dropCredentials(h)
	}
	if c.d.CheckRedirect != nil {
		n := *t
		via := []Hop{{URL: c.firstURL, Location: e.url}}
		if err := c.d.CheckRedirect(&n, h, via); err != nil {
			return nil
		}
	}
	c.header, c.dropped, c.guess, c.guessURL = h, dropped, true, e.url
	return t
}

// remember records where a chain that opened a connection at u ended.
func (c *chain) remember(u string, target *url.URL) {
	switch {
	case c.mem == nil, c.stay:
	case c.guess:
		// Straight to the remembered target: the memory was right, and
		// keeps the age of the chain that taught it.
		c.guess = false
	case u == c.firstURL:
		c.mem.forget(c.key, "")
	default:
		c.mem.put(c.key, target, u, c.dropped)
	}
}

// fallBack starts the chain again from the first URL, as the caller asked
// for it, after the remembered target failed: the memory was only a guess.
func (c *chain) fallBack(guessed string) {
	c.guess = false
	c.mem.forget(c.key, guessed)
	c.restart()
}

// restart makes the chain's next hop the first URL, as the caller sent it:
// that is not a redirect, so the loop memory and the hop count start
// afresh, and the caller's header goes out again.
func (c *chain) restart() {
	c.loopFrom, c.redirects = len(c.hops), 0
	c.header, c.dropped = c.firstHeader.Clone(), false
}
