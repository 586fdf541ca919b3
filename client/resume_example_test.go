package client_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsredirect/wsredirect"
	"github.com/wsredirect/wsredirect/client"
)

// store stands in for the app's shared state (a database): the last
// message number it applied for each client.
type store struct {
	mu      sync.Mutex
	applied map[string]int
	dups    int
}

// apply applies message seq of client once; a number it has seen is a
// resend from before a move, and is skipped.
func (s *store) apply(clientID string, seq int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq <= s.applied[clientID] {
		s.dups++
		return
	}
	s.applied[clientID] = seq
}

func (s *store) last(clientID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applied[clientID]
}

// Exactly-once across a move: messages carry numbers, each node's app
// greets a connection with the last number it applied for that client and
// skips numbers it has seen, and the client resends what was not applied
// when a node greets it. The Conn already delivers every message to one
// node's app; the numbers cover a message an app received but had not
// applied when its node went away.
func ExampleConn_resume() {
	st := &store{applied: map[string]int{}}
	var members []wsredirect.Member
	var mws []*wsredirect.Middleware
	for _, id := range []string{"a", "b"} {
		srv := httptest.NewUnstartedServer(nil)
		defer srv.Close()
		m := wsredirect.Member{ID: id, URL: "ws://" + srv.Listener.Addr().String()}
		members = append(members, m)
		mw := wsredirect.MustNew(wsredirect.Options{Self: m.URL, Members: members[:1], Rules: []wsredirect.Rule{wsredirect.Shard(wsredirect.QueryKey("client"))}})
		mws = append(mws, mw)
		srv.Config.Handler = mw.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer c.Close()
			id := r.URL.Query().Get("client")
			defer mw.Track(id, wsredirect.GorillaConn(c, nil))()
			c.WriteMessage(websocket.TextMessage, []byte("applied "+strconv.Itoa(st.last(id))))
			for {
				_, p, err := c.ReadMessage()
				if err != nil {
					return
				}
				seq, _ := strconv.Atoi(string(p))
				st.apply(id, seq)
			}
		}))
		srv.Start()
	}
	for _, mw := range mws { // a fleet of a and b; keys of a, for now
		mw.SetMembers(members...)
	}
	key := "c1"
	for i := 0; ; i++ {
		if m, _ := mws[0].State().Owner(key); m.ID == "a" {
			break
		}
		key = "c" + strconv.Itoa(i)
	}

	c, _, err := (&client.Dialer{}).Connect(context.Background(), members[0].URL+"/?client="+key, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	var mu sync.Mutex
	sent := 0
	send := func(from, to int) {
		mu.Lock()
		defer mu.Unlock()
		for seq := from; seq <= to; seq++ {
			c.WriteMessage(websocket.TextMessage, []byte(strconv.Itoa(seq)))
		}
		sent = max(sent, to)
	}
	go func() {
		for {
			_, p, err := c.ReadMessage(context.Background())
			if err != nil {
				return
			}
			if n, ok := strings.CutPrefix(string(p), "applied "); ok {
				last, _ := strconv.Atoi(n)
				mu.Lock()
				resend := sent
				mu.Unlock()
				send(last+1, resend) // what the node has not applied
			}
		}
	}()
	waitApplied := func(n int) {
		for st.last(key) < n {
			time.Sleep(time.Millisecond)
		}
	}
	send(1, 5)
	waitApplied(5)
	// Drain a: its client moves to b, by itself. b hears first, as it
	// would otherwise send the client back to a.
	mws[1].DrainMember("a", time.Now(), 0)
	mws[0].DrainMember("a", time.Now(), 0)
	send(6, 10)
	waitApplied(10)
	fmt.Println("applied", st.last(key))
	// Output:
	// applied 10
}
