// Package testredis starts real redis-server processes on loopback ports
// for tests: a single node, or a Redis Cluster of masters (and replicas).
// Every process is started by the test and stopped, by PID, when it ends.
// Without redis-server on PATH the test is skipped, unless
// MODELCACHE_REQUIRE_REDIS is set (CI sets it), which makes that a failure.
package testredis

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// TB is what the package needs of a test (testing.TB has it); tools that
// start servers supply their own.
type TB interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Skip(args ...any)
	TempDir() string
	Cleanup(func())
}

// Server is one redis-server process.
type Server struct {
	Addr string
	Port int
	Dir  string
	cmd  *exec.Cmd
	args []string
	t    TB
	tls  bool // speaks TLS only: pinged over TLS
}

// need skips (or fails, in CI) when redis-server is not installed.
func need(t TB) string {
	t.Helper()
	p, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("MODELCACHE_REQUIRE_REDIS") != "" {
			t.Fatal("redis-server not found, and MODELCACHE_REQUIRE_REDIS is set")
		}
		t.Skip("redis-server not found: install Debian's redis-server to run the L3 tests")
	}
	return p
}

// freePort asks the kernel for a free loopback port. A cluster node also
// uses port+10000 for its bus, so ports above 55535 are refused.
func freePort(t TB) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if port < 55535 {
			if b, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port+10000)); err == nil {
				b.Close()
				return port
			}
		}
	}
	t.Fatal("no free port pair")
	return 0
}

// Start starts a redis-server with extra configuration lines (e.g.
// "maxmemory 8mb").
func Start(t TB, conf ...string) *Server {
	t.Helper()
	return launch(t, false, func(port int) []string { return []string{"--port", strconv.Itoa(port)} }, conf)
}

// launch starts a server on a free port: listen gives the flags that make
// it listen there; every server is on loopback, keeps nothing on disk and
// runs in the foreground, stopped by the test.
func launch(t TB, tls bool, listen func(port int) []string, conf []string) *Server {
	t.Helper()
	bin := need(t)
	s := &Server{Port: freePort(t), Dir: t.TempDir(), t: t, tls: tls}
	s.Addr = fmt.Sprintf("127.0.0.1:%d", s.Port)
	s.args = append(listen(s.Port), "--bind", "127.0.0.1", "--dir", s.Dir,
		"--save", "", "--appendonly", "no", "--protected-mode", "yes", "--daemonize", "no", "--loglevel", "warning")
	for _, c := range conf {
		f := strings.Fields(c)
		s.args = append(s.args, "--"+f[0])
		s.args = append(s.args, f[1:]...)
	}
	s.start(bin)
	t.Cleanup(s.Kill)
	return s
}

func (s *Server) start(bin string) {
	s.t.Helper()
	s.cmd = exec.Command(bin, s.args...)
	s.cmd.Stdout, s.cmd.Stderr = nil, nil
	s.cmd.SysProcAttr = procAttr()
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.waitUp()
}

// waitUp waits (bounded) until the server answers PING.
func (s *Server) waitUp() {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if s.ping() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("redis-server on %s did not come up", s.Addr)
}

func (s *Server) ping() bool {
	var c net.Conn
	var err error
	if s.tls {
		d := &net.Dialer{Timeout: 200 * time.Millisecond}
		c, err = tls.DialWithDialer(d, "tcp", s.Addr, &tls.Config{InsecureSkipVerify: true}) // a liveness probe only
	} else {
		c, err = net.DialTimeout("tcp", s.Addr, 200*time.Millisecond)
	}
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	// A server that wants a password answers NOAUTH: it is up.
	return err == nil && (strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-NOAUTH"))
}

// Kill stops the server with SIGKILL, by PID, and waits for it. It is
// safe to call twice.
func (s *Server) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	kill(s.cmd.Process)
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Stop pauses the server (SIGSTOP): it keeps its connections but answers
// nothing, as a sick node does. Cont resumes it. Without SIGSTOP (Windows)
// the test is skipped.
func (s *Server) Stop() { s.pause(true) }

// Cont resumes a stopped server.
func (s *Server) Cont() { s.pause(false) }

// Restart starts the server again on the same port and directory.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	s.start(need(s.t))
}

// CLI runs redis-cli against the server.
func (s *Server) CLI(args ...string) (string, error) {
	out, err := exec.Command("redis-cli", append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(s.Port)}, args...)...).CombinedOutput()
	return string(out), err
}

// Cluster is a Redis Cluster on loopback.
type Cluster struct {
	Masters, Replicas []*Server
}

// Addrs are the masters' addresses.
func (c *Cluster) Addrs() []string {
	var a []string
	for _, m := range c.Masters {
		a = append(a, m.Addr)
	}
	return a
}

// StartCluster starts masters (at least 3) with replicas replicas each and
// joins them into a cluster covering every slot.
func StartCluster(t TB, masters, replicas int, conf ...string) *Cluster {
	t.Helper()
	need(t)
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Skip("redis-cli not found")
	}
	c := &Cluster{}
	var all []*Server
	for range masters * (1 + replicas) {
		s := Start(t, append([]string{"cluster-enabled yes", "cluster-config-file nodes.conf", "cluster-node-timeout 1000",
			"cluster-replica-validity-factor 0", "cluster-allow-reads-when-down yes",
			// Replicas stay with their masters: tests pick which master to kill.
			"cluster-allow-replica-migration no"}, conf...)...)
		all = append(all, s)
	}
	args := []string{"--cluster", "create"}
	for _, s := range all {
		args = append(args, s.Addr)
	}
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	out, err := exec.Command("redis-cli", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	// Wait (bounded) until every node sees the cluster as ok.
	deadline := time.Now().Add(20 * time.Second)
	for _, s := range all {
		for {
			info, _ := s.CLI("cluster", "info")
			if strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cluster not ok on %s: %s", s.Addr, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// redis-cli chooses which nodes are masters.
	for _, s := range all {
		if s.Role() == "master" {
			c.Masters = append(c.Masters, s)
		} else {
			c.Replicas = append(c.Replicas, s)
		}
	}
	return c
}

// Replicas is how many replicas a master has connected now.
func (s *Server) Replicas() int {
	info, _ := s.CLI("info", "replication")
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "connected_slaves:"); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// Role is "master" or "slave", as the server says now.
func (s *Server) Role() string {
	out, _ := s.CLI("role")
	role, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	return role
}

// WaitReplicated waits (bounded) until every replica has every write its
// master has: replication is asynchronous, and a test that kills a master
// right after writing would lose what was not yet copied.
func (c *Cluster) WaitReplicated(t TB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, m := range c.Masters {
		for {
			info, _ := m.CLI("info", "replication")
			if replicated(info) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replicas of %s lag: %s", m.Addr, info)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// replicated reads INFO replication: every slave's offset is the master's.
func replicated(info string) bool {
	var master string
	var offsets []string
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "master_repl_offset:"); ok {
			master = v
		}
		if strings.HasPrefix(line, "slave") && strings.Contains(line, "offset=") {
			for _, f := range strings.Split(line, ",") {
				if v, ok := strings.CutPrefix(f, "offset="); ok {
					offsets = append(offsets, v)
				}
			}
		}
	}
	if master == "" {
		return false
	}
	for _, o := range offsets {
		if o != master {
			return false
		}
	}
	return true
}

// Certs writes a CA and a certificate for 127.0.0.1 signed by it into a
// temporary directory, for a TLS server.
func Certs(t TB) (caFile, certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "modelcache test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, b []byte) string {
		p := dir + "/" + name
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", der), write("server.key", "EC PRIVATE KEY", keyDER)
}

// StartTLS starts a redis-server that speaks TLS only, with the
// certificate and key given (clients are not asked for certificates).
func StartTLS(t TB, certFile, keyFile, caFile string, conf ...string) *Server {
	t.Helper()
	return launch(t, true, func(port int) []string {
		return []string{"--port", "0", "--tls-port", strconv.Itoa(port), "--tls-cert-file", certFile, "--tls-key-file", keyFile,
			"--tls-ca-cert-file", caFile, "--tls-auth-clients", "no"}
	}, conf)
}
