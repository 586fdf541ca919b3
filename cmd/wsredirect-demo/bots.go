package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsredirect/wsredirect/client"
)

const (
	maxBots  = 500 // simulated clients at most
	botRooms = 40  // rooms they spread over
)

// bots are simulated Go clients for the page's charts: each joins a room
// through the front door, follows every move (client.Conn does), and when
// its connection breaks (a crash) connects again through the front door
// after a pause, as an app would.
type bots struct {
	f      *fleet
	dialer *client.Dialer

	mu      sync.Mutex
	cancels []context.CancelFunc
	wg      sync.WaitGroup
}

func newBots(f *fleet) *bots {
	// Each is a new client, without memory of redirects: it joins
	// through the front door.
	return &bots{f: f, dialer: &client.Dialer{Dialer: websocket.Dialer{HandshakeTimeout: 3 * time.Second}, RememberRedirects: -1}}
}

// add starts k more clients, up to maxBots in all.
func (b *bots) add(k int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.f.ctx.Err() != nil {
		return
	}
	for range min(k, maxBots-len(b.cancels)) {
		ctx, cancel := context.WithCancel(b.f.ctx)
		b.cancels = append(b.cancels, cancel)
		b.wg.Go(func() { b.run(ctx) })
	}
}

// removeAll stops every client; their connections close.
func (b *bots) removeAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, cancel := range b.cancels {
		cancel()
	}
	b.cancels = nil
}

func (b *bots) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.cancels)
}

// wait waits for the clients to stop, once the fleet's context ended.
func (b *bots) wait() { b.wg.Wait() }

// run is one simulated client after another: each stays in a random room
// for 10 to 30 seconds, then leaves, and the next one arrives, so the
// front door keeps redirecting.
func (b *bots) run(ctx context.Context) {
	base := b.f.front.roomsURL()
	room := ""
	for ctx.Err() == nil {
		if room == "" {
			room = fmt.Sprintf("sim-%02d", rand.N(botRooms))
		}
		session, cancel := context.WithTimeout(ctx, 10*time.Second+rand.N(20*time.Second))
		conn, _, err := b.dialer.Connect(session, base+room, nil)
		if err == nil {
			for err == nil {
				_, _, err = conn.ReadMessage(session)
			}
			conn.Close()
		}
		ended := session.Err() != nil
		cancel()
		if ended {
			room = "" // the next client, in a room of its own choosing
			continue
		}
		// The connection failed or broke (a crash): back off before
		// connecting again to the same room, as an app would; a crashed
		// node's rooms stay unreachable until its lease expires.
		t := time.NewTimer(500*time.Millisecond + rand.N(time.Second))
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}
