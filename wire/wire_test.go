package wire_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsredirect/wsredirect/wire"
)

// vectors is testdata/vectors.json, which the Node test of the JavaScript
// helper reads too, so the two sides cannot drift apart.
type vectors struct {
	EncodeRedirect []struct {
		Name, Target, Message, Reason string
	}
	EncodeMove []struct {
		Name, Base string
		Reason     *string
	}
	EncodeRetry []struct {
		Name    string
		AfterMs int64
		Reason  string
	}
	ParseRedirect []struct {
		Name, Reason, LastMessage, Current string
		Target                             *string
	}
	ParseRetry []struct {
		Name, Reason string
		Seconds      *int64
	}
	IsRedirectMessage []struct {
		Name, Message string
		Is            bool
	}
	Cue                     string
	CueAnswerMs, CueQuietMs int64
	IsCue                   []struct {
		Name, Message string
		Is            bool
	}
}

func loadVectors(t *testing.T) vectors {
	t.Helper()
	b, err := os.ReadFile("testdata/vectors.json")
	require.NoError(t, err)
	var v vectors
	require.NoError(t, json.Unmarshal(b, &v))
	require.NotEmpty(t, v.ParseRedirect)
	return v
}

func TestVectors(t *testing.T) {
	v := loadVectors(t)
	for _, tc := range v.EncodeRedirect {
		t.Run("EncodeRedirect/"+tc.Name, func(t *testing.T) {
			msg, reason := wire.EncodeRedirect(tc.Target)
			assert.Equal(t, tc.Message, msg)
			assert.Equal(t, tc.Reason, reason)
			assert.LessOrEqual(t, len(reason), wire.MaxReason)
			assert.Equal(t, msg != "", wire.IsRedirectMessage(msg))
		})
	}
	for _, tc := range v.EncodeMove {
		t.Run("EncodeMove/"+tc.Name, func(t *testing.T) {
			reason, ok := wire.EncodeMove(tc.Base)
			if tc.Reason == nil {
				assert.False(t, ok)
				return
			}
			assert.True(t, ok)
			assert.Equal(t, *tc.Reason, reason)
		})
	}
	for _, tc := range v.EncodeRetry {
		t.Run("EncodeRetry/"+tc.Name, func(t *testing.T) {
			assert.Equal(t, tc.Reason, wire.EncodeRetry(time.Duration(tc.AfterMs)*time.Millisecond))
		})
	}
	for _, tc := range v.ParseRedirect {
		t.Run("ParseRedirect/"+tc.Name, func(t *testing.T) {
			got, ok := wire.ParseRedirect(tc.Reason, tc.LastMessage, tc.Current)
			if tc.Target == nil {
				assert.False(t, ok, "got %q", got)
				return
			}
			assert.True(t, ok)
			assert.Equal(t, *tc.Target, got)
		})
	}
	for _, tc := range v.ParseRetry {
		t.Run("ParseRetry/"+tc.Name, func(t *testing.T) {
			got, ok := wire.ParseRetry(tc.Reason)
			if tc.Seconds == nil {
				assert.False(t, ok, "got %v", got)
				return
			}
			assert.True(t, ok)
			assert.Equal(t, time.Duration(*tc.Seconds)*time.Second, got)
		})
	}
	for _, tc := range v.IsRedirectMessage {
		t.Run("IsRedirectMessage/"+tc.Name, func(t *testing.T) {
			assert.Equal(t, tc.Is, wire.IsRedirectMessage(tc.Message))
		})
	}
	assert.Equal(t, v.Cue, wire.Cue, "the JavaScript helper reads the cue from the vectors")
	assert.Equal(t, time.Duration(v.CueAnswerMs)*time.Millisecond, wire.CueAnswerWait)
	assert.Equal(t, time.Duration(v.CueQuietMs)*time.Millisecond, wire.CueQuiet)
	require.NotEmpty(t, v.IsCue)
	for _, tc := range v.IsCue {
		t.Run("IsCue/"+tc.Name, func(t *testing.T) {
			assert.Equal(t, tc.Is, wire.IsCue(tc.Message))
		})
	}
}

// Cases JSON cannot carry: bytes that are not UTF-8.
func TestParseRedirectRefusesInvalidUTF8(t *testing.T) {
	_, ok := wire.ParseRedirect("wsr1 \xff", "", "ws://a/x")
	assert.False(t, ok)
	_, ok = wire.ParseRedirect("wsr1 +", "wsr1 ws://b/\xfe", "ws://a/x")
	assert.False(t, ok)
}

func TestRetrySecondsClamps(t *testing.T) {
	assert.Equal(t, int64(86400), wire.RetrySeconds(1<<63-1))
	assert.Equal(t, int64(86400), wire.RetrySeconds(wire.MaxRetry))
	assert.Equal(t, int64(1), wire.RetrySeconds(time.Nanosecond))
	assert.Equal(t, int64(0), wire.RetrySeconds(-time.Hour))
}

// FuzzCodec: whatever a peer sends in a close frame, parsing never panics,
// and every target a server encodes is read back whole.
func FuzzCodec(f *testing.F) {
	for _, s := range []string{"wss://b.example.com/rooms/1?t=x", "wss://b/" + strings.Repeat("q", 200), "wsr1 +", "wsr1 =wss://c", "wsr1 retry=5", "+"} {
		f.Add(s, "ws://a.example.com/x?y=1")
	}
	f.Fuzz(func(t *testing.T, s, current string) {
		wire.ParseRedirect(s, s, current)
		if d, ok := wire.ParseRetry(s); ok && (d < 0 || d > wire.MaxRetry) {
			t.Fatalf("ParseRetry(%q) = %v", s, d)
		}
		if !utf8.ValidString(s) || s == "" {
			return
		}
		msg, reason := wire.EncodeRedirect(s)
		if len(reason) > wire.MaxReason {
			t.Fatalf("reason of %d bytes", len(reason))
		}
		got, ok := wire.ParseRedirect(reason, msg, current)
		if !ok || got != s {
			t.Fatalf("EncodeRedirect(%q) read back as %q, %v", s, got, ok)
		}
	})
}
