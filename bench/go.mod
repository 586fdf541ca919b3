module github.com/wsredirect/wsredirect/bench

go 1.26

replace github.com/wsredirect/wsredirect => ../

require (
	github.com/cespare/xxhash/v2 v2.3.0
	github.com/dgryski/go-jump v0.0.0-20170409065014-e1f439676b57
	github.com/dgryski/go-rendezvous v0.0.0-20200823014737-9f7001d12a5f
	github.com/golang/groupcache v0.0.0-20241129210726-2c02b8208cf8
	github.com/gorilla/websocket v1.5.3
	github.com/serialx/hashring v0.0.0-20200727003509-22c0c7ab6b1b
	github.com/stathat/consistent v1.0.0
	github.com/stretchr/testify v1.12.1
	github.com/wsredirect/wsredirect v0.0.0-00010101000000-000000000000
)

require (
	github.com/go-chi/chi/v5 v5.5.0 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
)
