module github.com/wsredirect/wsredirect/e2e

go 1.26.0

replace github.com/wsredirect/wsredirect => ../

require (
	github.com/chromedp/chromedp v0.23.0
	github.com/gorilla/websocket v1.5.3
	github.com/stretchr/testify v1.12.1
	github.com/wsredirect/wsredirect v0.0.0-00010101000000-000000000000
	golang.org/x/net v0.62.0
)

require (
	github.com/chromedp/cdproto v0.159.0 // indirect
	github.com/go-chi/chi/v5 v5.5.0 // indirect
	github.com/go-json-experiment/json v0.0.0-20260213210345-44df1a37e875 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/text v0.43.0 // indirect
)
