package e2e

import (
	"context"
	"testing"

	"github.com/wsredirect/wsredirect"
)

// TestAttackBrowser plays attack_test.go's attack and a cued move with the
// helper in Chromium, one tab per victim (each with its own
// sessionStorage).
func TestAttackBrowser(t *testing.T) {
	browser := startChromium(t)
	open := func(t *testing.T, p *page) func(string) victims {
		return func(url string) victims { return openBrowserVictims(t, browser, p, url) }
	}
	t.Run("ForgedLines", func(t *testing.T) {
		page := newPage(t)
		f, chats := newChatFleet(t, page.origin, wsredirect.ModeAuto)
		attackRoom(t, f, chats, open(t, page))
	})
	t.Run("CuedMove", func(t *testing.T) {
		page := newPage(t)
		f, chats := newChatFleet(t, page.origin, wsredirect.ModeAuto)
		cuedMove(t, f, chats, open(t, page))
	})
}

type browserVictims struct{ tabs []*tab }

func openBrowserVictims(t *testing.T, browser context.Context, p *page, url string) *browserVictims {
	t.Helper()
	v := &browserVictims{}
	for _, protocols := range victimProtocols {
		tb := openTab(t, browser, p)
		tb.call("helper", url, protocols, victimOptions)
		v.tabs = append(v.tabs, tb)
	}
	return v
}

func (v *browserVictims) count() int { return len(v.tabs) }

func (v *browserVictims) events(i int) []event { return evalJS[[]event](v.tabs[i], `window.log`) }

func (v *browserVictims) send(i int, text string) { v.tabs[i].call("send", text) }

func (v *browserVictims) state(i int) victimState {
	return evalJS[victimState](v.tabs[i],
		`({readyState: ws.readyState, url: ws.url, memory: sessionStorage.getItem("wsredirect.remembered") ?? ""})`)
}
