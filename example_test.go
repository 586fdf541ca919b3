package wsredirect_test

import (
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/gorilla/websocket"

	"github.com/wsredirect/wsredirect"
)

// chatServer upgrades and greets: it stands in for the app's WebSocket code.
func chatServer(name string) http.Handler {
	up := websocket.Upgrader{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		c.WriteMessage(websocket.TextMessage, []byte("welcome to "+name+" "+r.URL.Path))
	})
}

// Moving one path of a chi app to another server: old clients keep dialling
// the old address and are sent on. gorilla/websocket does not follow
// redirects, so the example follows the Location by hand.
func Example_chi() {
	newNode := httptest.NewServer(chatServer("the new node"))
	defer newNode.Close()

	mw, err := wsredirect.New(wsredirect.Options{
		Rules: []wsredirect.Rule{
			wsredirect.Path("ws"+strings.TrimPrefix(newNode.URL, "http"), "/legacy/*"),
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	r := chi.NewRouter()
	r.Use(mw.Handler)
	r.Get("/*", chatServer("the old node").ServeHTTP)
	oldNode := httptest.NewServer(r)
	defer oldNode.Close()

	url := "ws" + strings.TrimPrefix(oldNode.URL, "http") + "/legacy/rooms/42"
	_, resp, err := websocket.DefaultDialer.Dial(url, nil)
	fmt.Println(err, resp.StatusCode, resp.Header.Get("Cache-Control"))

	c, _, err := websocket.DefaultDialer.Dial(resp.Header.Get("Location"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	_, msg, _ := c.ReadMessage()
	fmt.Println(string(msg))
	// Output:
	// websocket: bad handshake 307 no-store
	// welcome to the new node /legacy/rooms/42
}

// Routing by host with the standard library: requests for eu.example.com go
// to the EU fleet; everything else, and every request that is not a
// WebSocket upgrade, reaches the app. Decide shows the decision without I/O.
func Example_stdlib() {
	mw := wsredirect.MustNew(wsredirect.Options{
		Self: "wss://us.example.net",
		Rules: []wsredirect.Rule{
			wsredirect.Host("wss://eu.example.net", "eu.example.com", "*.eu.example.com"),
			wsredirect.Host("wss://us.example.net", "us.example.com"),
		},
	})
	mux := http.NewServeMux()
	mux.Handle("/rooms/", mw.Handler(chatServer("us")))

	for _, host := range []string{"eu.example.com", "paris.eu.example.com:443", "us.example.com", "example.com"} {
		r := httptest.NewRequest(http.MethodGet, "http://"+host+"/rooms/1?token=t", nil)
		r.Header.Set("Connection", "Upgrade")
		r.Header.Set("Upgrade", "websocket")
		d := mw.Decide(r)
		fmt.Printf("%-25s %-8s %s\n", host, d.Action, d.Target)
	}
	// Output:
	// eu.example.com            redirect wss://eu.example.net
	// paris.eu.example.com:443  redirect wss://eu.example.net
	// us.example.com            pass     wss://us.example.net
	// example.com               pass     <nil>
}

// A user rule has the same shape as the built-in ones. This one refuses new
// connections during maintenance and tells clients when to come back.
func ExampleNewRule() {
	maintenance := wsredirect.NewRule("maintenance", func(r *http.Request, s *wsredirect.State) wsredirect.Decision {
		return wsredirect.Decision{Action: wsredirect.Refuse, RetryAfter: 30 * time.Second}
	})
	mw := wsredirect.MustNew(wsredirect.Options{Rules: []wsredirect.Rule{maintenance}})

	r := httptest.NewRequest(http.MethodGet, "http://chat.example.com/rooms/1", nil)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "websocket")
	w := httptest.NewRecorder()
	mw.Handler(http.NotFoundHandler()).ServeHTTP(w, r)
	fmt.Println(w.Code, w.Header().Get("Retry-After"))
	// Output:
	// 503 30
}

// Every node of a fleet runs the same rule over the same members; each
// sends a room to its owner and serves the rooms it owns. A drain, told to
// every node, moves only the drained node's rooms.
func ExampleShard() {
	members := []wsredirect.Member{
		{ID: "a", URL: "wss://a.chat.example.com"},
		{ID: "b", URL: "wss://b.chat.example.com"},
		{ID: "c", URL: "wss://c.chat.example.com"},
	}
	nodes := map[string]*wsredirect.Middleware{}
	for _, m := range members {
		nodes[m.ID] = wsredirect.MustNew(wsredirect.Options{
			Self:    m.URL,
			Members: members,
			Rules:   []wsredirect.Rule{wsredirect.Shard(wsredirect.QueryKey("room"))},
		})
	}
	whereIs := func(room string) string {
		r := httptest.NewRequest(http.MethodGet, "http://chat.example.com/ws?room="+room, nil)
		r.Header.Set("Connection", "Upgrade")
		r.Header.Set("Upgrade", "websocket")
		d := nodes["a"].Decide(r)
		if d.Action == wsredirect.Pass {
			return "served by a"
		}
		return "sent to " + d.Target.String()
	}
	report := func() {
		for _, room := range []string{"lobby", "books", "music"} {
			owner, _ := nodes["a"].State().Owner(room)
			fmt.Printf("%-6s owner %s, node a: %s\n", room, owner.ID, whereIs(room))
		}
	}
	report()

	since := time.Now()
	for _, n := range nodes {
		n.DrainMember("a", since, 0)
	}
	fmt.Println("a drains:")
	report()
	// Output:
	// lobby  owner b, node a: sent to wss://b.chat.example.com
	// books  owner a, node a: served by a
	// music  owner c, node a: sent to wss://c.chat.example.com
	// a drains:
	// lobby  owner b, node a: sent to wss://b.chat.example.com
	// books  owner c, node a: sent to wss://c.chat.example.com
	// music  owner c, node a: sent to wss://c.chat.example.com
}
