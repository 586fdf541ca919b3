package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// embeddedEtcd is a one-member etcd cluster in this process, on loopback,
// with its data in a temporary directory that stop removes.
type embeddedEtcd struct {
	e        *embed.Etcd
	dir      string
	endpoint string // host:port of its client URL
	logLevel zap.AtomicLevel
}

// startEmbeddedEtcd starts etcd on two free loopback ports (clients and
// peers), logging only its errors to logs.
func startEmbeddedEtcd(logs io.Writer) (*embeddedEtcd, error) {
	dir, err := os.MkdirTemp("", "wsredirect-demo-etcd-")
	if err != nil {
		return nil, fmt.Errorf("embedded etcd: %w", err)
	}
	var errs []error
	// A port found free may be taken before etcd listens on it: try again
	// with others. (A peer URL cannot be :0: the cluster's configuration
	// names it.)
	level := zap.NewAtomicLevelAt(zap.ErrorLevel)
	for attempt := range 3 {
		e, endpoint, err := tryEtcd(filepath.Join(dir, fmt.Sprint(attempt)), zapLogger(logs, level))
		if err == nil {
			return &embeddedEtcd{e: e, dir: dir, endpoint: endpoint, logLevel: level}, nil
		}
		errs = append(errs, err)
	}
	os.RemoveAll(dir)
	return nil, fmt.Errorf("embedded etcd did not start: %w", errors.Join(errs...))
}

func tryEtcd(dir string, log *zap.Logger) (*embed.Etcd, string, error) {
	clientAddr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	peerAddr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	cfg := embed.NewConfig()
	cfg.Name = "wsredirect-demo"
	cfg.Dir = dir
	cu := url.URL{Scheme: "http", Host: clientAddr}
	pu := url.URL{Scheme: "http", Host: peerAddr}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(log)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, clientAddr, nil
	case err := <-e.Err():
		e.Close()
		return nil, "", err
	case <-time.After(30 * time.Second):
		e.Close()
		return nil, "", errors.New("not ready within 30 s")
	}
}

// stop shuts etcd down and removes its data.
func (s *embeddedEtcd) stop() {
	s.logLevel.SetLevel(zap.FatalLevel) // closing listeners is no error here
	s.e.Close()
	os.RemoveAll(s.dir)
}

// freeAddr returns a loopback address whose port is free now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// zapLogger is a zap logger for etcd's own errors (level), written to w;
// etcd is chatty below that, and the demo's sources say what matters.
func zapLogger(w io.Writer, level zap.AtomicLevel) *zap.Logger {
	enc := zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig())
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), level))
}

// newEtcdClient returns a client of the fleet's etcd. Its gRPC reconnect
// backoff is capped at a second, well below the lease TTL (gRPC's default
// grows to two minutes), so that a node renews its lease in time once etcd
// is back after an outage (see package etcd).
func newEtcdClient(endpoints []string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: time.Second,
		})},
	})
}

// lockedWriter serialises writes to w: the terminal is written by the
// loggers, etcd's and the check's progress at once.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
