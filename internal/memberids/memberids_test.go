package memberids

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/wsredirect/wsredirect"
)

func TestMissing(t *testing.T) {
	ms := func(ids ...string) []wsredirect.Member {
		var out []wsredirect.Member
		for _, id := range ids {
			out = append(out, wsredirect.Member{ID: id})
		}
		return out
	}
	old, now := ms("a", "b", "d"), ms("b", "c", "d", "e")
	assert.Equal(t, []string{"c", "e"}, Missing(now, old), "joined")
	assert.Equal(t, []string{"a"}, Missing(old, now), "left")
	assert.Nil(t, Missing(old, old))
	assert.Equal(t, []string{"a", "b", "d"}, Missing(old, nil))
}
