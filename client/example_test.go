package client_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsredirect/wsredirect"
	"github.com/wsredirect/wsredirect/client"
	"github.com/wsredirect/wsredirect/wire"
)

// echoUpgrader is the application behind the middleware: it echoes every
// message with the name of the node that served it.
func echoUpgrader(name string) http.Handler {
	var up websocket.Upgrader
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			c.WriteMessage(mt, append([]byte(name+" echoes "), p...))
		}
	})
}

// A node running the wsredirect middleware sends /rooms/* to another node
// with a 307; the dialer follows it and reports the hops.
func ExampleDialer_DialTrace() {
	b := httptest.NewServer(echoUpgrader("b"))
	defer b.Close()
	bURL := "ws" + strings.TrimPrefix(b.URL, "http")

	mw := wsredirect.MustNew(wsredirect.Options{
		Rules: []wsredirect.Rule{wsredirect.Path(bURL, "/rooms/*")},
	})
	a := httptest.NewServer(mw.Handler(echoUpgrader("a")))
	defer a.Close()
	aURL := "ws" + strings.TrimPrefix(a.URL, "http")

	d := client.Dialer{MaxHops: 5}
	d.HandshakeTimeout = 5 * time.Second
	c, _, hops, err := d.DialTrace(context.Background(), aURL+"/rooms/42", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	names := strings.NewReplacer(aURL, "ws://a", bURL, "ws://b")
	for _, h := range hops {
		fmt.Println(h.Status, names.Replace(h.URL))
	}
	c.WriteMessage(websocket.TextMessage, []byte("hi"))
	_, p, _ := c.ReadMessage()
	fmt.Println(string(p))
	// Output:
	// 307 ws://a/rooms/42
	// 101 ws://b/rooms/42
	// b echoes hi
}

// A node redirects with a close code, as the middleware answers browsers:
// it accepts the upgrade selecting the marker subprotocol, which the client
// offers, so the connection is known as a stub, and closes it with the
// target (here too long for a close reason, so it travels in a message
// first). ReadMessage follows it and returns the new node's first message.
func ExampleDialer_Connect() {
	var up websocket.Upgrader
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		c.WriteMessage(websocket.TextMessage, []byte("b got token of "+fmt.Sprint(len(r.URL.Query().Get("token")))+" bytes"))
		c.ReadMessage()
	}))
	defer b.Close()
	target := "ws" + strings.TrimPrefix(b.URL, "http") + "/?token=" + strings.Repeat("x", 200)

	stub := websocket.Upgrader{Subprotocols: []string{wire.Subprotocol}}
	a := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := stub.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		message, reason := wire.EncodeRedirect(target)
		c.WriteMessage(websocket.TextMessage, []byte(message))
		c.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(wire.CloseRedirect, reason), time.Now().Add(time.Second))
		c.ReadMessage()
	}))
	defer a.Close()

	var d client.Dialer
	c, _, err := d.Connect(context.Background(), "ws"+strings.TrimPrefix(a.URL, "http"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	_, p, err := c.ReadMessage(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(p))
	for _, h := range c.Hops() {
		fmt.Println(h.Status, h.Close)
	}
	// Output:
	// b got token of 200 bytes
	// 101 4307
	// 101 0
}
