package k8s_test

import (
	"bytes"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// TestPodsStartLocally runs the coordinator and a trainer of the kind
// overlay as local processes with their manifests' own arguments and
// environment, changed only where a pod differs from this machine: the
// pod IP is 127.0.0.1, each declared port is a free local one, the Service
// name the trainer joins is 127.0.0.1, the mounted ConfigMap is a local
// file, and the store is the test MinIO (SBTRAIN_TEST_S3_ENDPOINT, under a
// fresh prefix, the bucket made by the overlay's own bucket Job) or else a
// local directory. The coordinator must answer every HTTP probe of its
// manifest, the trainer must get a plan from it, and both must stop on
// SIGTERM within the pods' grace period.
func TestPodsStartLocally(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	objs := rendered(t, "overlays/kind")
	cs := sbtrainContainers(t, objs)
	coord := one(t, cs, "coordinator")
	trainers := byCommand(cs, "trainer")
	if len(trainers) == 0 {
		t.Fatal("no trainer")
	}
	envs := localStore(t, cs)

	coordPorts := freePorts(t, coord.c)
	cp := startLocally(t, objs, coord, coordPorts, envs, nil)
	budget := 60 * time.Second
	if p := coord.c.StartupProbe; p != nil {
		budget = time.Duration(p.PeriodSeconds*p.FailureThreshold) * time.Second
	}
	probes := 0
	for kind, p := range map[string]*corev1.Probe{"startup": coord.c.StartupProbe, "readiness": coord.c.ReadinessProbe, "liveness": coord.c.LivenessProbe} {
		if p == nil || p.HTTPGet == nil {
			continue
		}
		probes++
		port, ok := containerPort(coord.c, p.HTTPGet.Port, corev1.ProtocolTCP)
		if !ok {
			t.Fatalf("%s probe port %s is not declared", kind, p.HTTPGet.Port.String())
		}
		u := fmt.Sprintf("http://127.0.0.1:%d%s", coordPorts[int(port.ContainerPort)], p.HTTPGet.Path)
		if err := waitHTTP(u, budget, cp); err != nil {
			t.Fatalf("coordinator's %s probe %s: %v\n%s", kind, u, err, cp.out.String())
		}
	}
	if probes == 0 {
		t.Fatal("the coordinator has no HTTP probe")
	}

	gossip := coordPorts[addrPort(t, coord, "gossip", true)]
	tr := trainers[0]
	trPorts := freePorts(t, tr.c)
	tp := startLocally(t, objs, tr, trPorts, envs, map[string]string{"join": net.JoinHostPort("127.0.0.1", strconv.Itoa(gossip))})
	deadline := time.Now().Add(30 * time.Second)
	// A plan is what the coordinator streams over gRPC to a trainer that
	// joined its gossip: both paths work.
	for !planRE.MatchString(tp.out.String()) {
		if time.Now().After(deadline) || tp.exited() {
			t.Fatalf("the trainer got no plan from the coordinator:\n%s\ncoordinator:\n%s", tp.out.String(), cp.out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	for _, p := range []*localProc{tp, cp} {
		grace := 30 * time.Second
		if g := p.s.w.tmpl.Spec.TerminationGracePeriodSeconds; g != nil {
			grace = time.Duration(*g) * time.Second
		}
		if err := p.stop(grace); err != nil {
			t.Errorf("%s: %v\n%s", p.s, err, p.out.String())
		}
	}
}

// planRE finds a trainer's log line of a received plan.
var planRE = regexp.MustCompile(`(?m)\bplan\b.*\bgeneration=\d+`)

// localStore returns the environment that points the containers at a
// local store: the test MinIO when there is one, after running the
// overlay's bucket Job against it, else a directory.
func localStore(t *testing.T, cs []sbtrainContainer) map[string]string {
	t.Helper()
	ep := os.Getenv("SBTRAIN_TEST_S3_ENDPOINT")
	if ep == "" {
		t.Log("SBTRAIN_TEST_S3_ENDPOINT is not set: using a file store (start MinIO with .ci/minio.sh to test the S3 configuration)")
		return map[string]string{"SBTRAIN_STORE": "file://" + filepath.ToSlash(t.TempDir())}
	}
	coord := one(t, cs, "coordinator")
	u, err := url.Parse(coord.env["SBTRAIN_STORE"].value)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = fmt.Sprintf("/k8s-test-%d", time.Now().UnixNano())
	envs := map[string]string{"SBTRAIN_STORE": u.String(), "AWS_ENDPOINT_URL_S3": ep}
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"} {
		envs[k] = os.Getenv(k)
	}
	jobs := byCommand(cs, "ckpt")
	if len(jobs) == 0 {
		t.Fatal("no bucket Job (sbtrain ckpt ... --create-bucket) in the kind overlay")
	}
	p := startLocally(t, nil, jobs[0], nil, envs, nil)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not finish in 30 s:\n%s", p.s, p.out.String())
	}
	if !p.cmd.ProcessState.Success() {
		t.Fatalf("%s: %v\n%s", p.s, p.cmd.ProcessState, p.out.String())
	}
	t.Logf("store %s on %s", u, ep)
	return envs
}

// localProc is a container's command running here.
type localProc struct {
	s    sbtrainContainer
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

func (p *localProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *localProc) stop(grace time.Duration) error {
	if p.exited() {
		return fmt.Errorf("exited before SIGTERM: %v", p.cmd.ProcessState)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("still running %s after SIGTERM, the pod's grace period: the kubelet would SIGKILL it", grace)
	}
}

// freePorts maps each port a container declares to a free local one (free
// for both TCP and UDP, as gossip needs).
func freePorts(t *testing.T, c corev1.Container) map[int]int {
	t.Helper()
	out := map[int]int{}
	for _, p := range c.Ports {
		cp := int(p.ContainerPort)
		if _, ok := out[cp]; ok {
			continue
		}
		for try := 0; ; try++ {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			port := l.Addr().(*net.TCPAddr).Port
			u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			l.Close()
			if err == nil {
				u.Close()
				out[cp] = port
				break
			}
			if try == 20 {
				t.Fatalf("no port free for TCP and UDP: %v", err)
			}
		}
	}
	return out
}

// startLocally starts a container's command line here (see
// TestPodsStartLocally); override replaces whole flag values.
func startLocally(t *testing.T, objs []object, s sbtrainContainer, ports map[int]int, envs, override map[string]string) *localProc {
	t.Helper()
	env := maps.Clone(s.env)
	for name, e := range env {
		if e.fieldRef == "status.podIP" {
			env[name] = envSource{value: "127.0.0.1", fieldRef: e.fieldRef}
		}
	}
	for k, v := range envs {
		env[k] = envSource{value: v}
	}
	// The ConfigMaps and Secrets the container mounts, as local files.
	mounts := map[string]string{}
	for _, m := range s.c.VolumeMounts {
		i := slices.IndexFunc(s.w.tmpl.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		if i < 0 {
			continue
		}
		files := map[string][]byte{}
		switch v := s.w.tmpl.Spec.Volumes[i]; {
		case v.ConfigMap != nil:
			cm, ok := find[*corev1.ConfigMap](objs, s.w.namespace, v.ConfigMap.Name)
			if !ok {
				t.Fatalf("%s: no ConfigMap for volume %s", s, m.Name)
			}
			for k, d := range cm.Data {
				files[k] = []byte(d)
			}
		case v.Secret != nil:
			sec, ok := find[*corev1.Secret](objs, s.w.namespace, v.Secret.SecretName)
			if !ok {
				t.Fatalf("%s: no Secret for volume %s", s, m.Name)
			}
			maps.Copy(files, sec.Data)
			for k, d := range sec.StringData {
				files[k] = []byte(d)
			}
		default:
			continue
		}
		dir := t.TempDir()
		for k, d := range files {
			if err := os.WriteFile(filepath.Join(dir, k), d, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		mounts[strings.TrimSuffix(m.MountPath, "/")+"/"] = dir + "/"
	}
	args := append([]string{s.inv.command}, s.inv.positional...)
	for _, name := range slices.Sorted(maps.Keys(s.inv.flags)) {
		v, err := expand(s.inv.flags[name], env)
		if err != nil {
			t.Fatalf("%s: --%s: %v", s, name, err)
		}
		if o, ok := override[name]; ok {
			v = o
		}
		for from, to := range mounts {
			if rest, ok := strings.CutPrefix(v, from); ok {
				v = to + rest
			}
		}
		if n, err := strconv.Atoi(v); err == nil && strings.HasSuffix(name, "-port") {
			if p, ok := ports[n]; ok {
				v = strconv.Itoa(p)
			}
		} else if host, port, err := net.SplitHostPort(v); err == nil {
			if n, _ := strconv.Atoi(port); ports[n] != 0 {
				v = net.JoinHostPort(host, strconv.Itoa(ports[n]))
			}
		}
		args = append(args, "--"+name+"="+v)
	}
	home := t.TempDir()
	cmd := exec.Command(sbtrainBinary(t), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "TMPDIR=" + home}
	for _, k := range slices.Sorted(maps.Keys(env)) {
		cmd.Env = append(cmd.Env, k+"="+env[k].value)
	}
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &localProc{s: s, cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			cmd.Process.Kill()
			<-p.done
		}
	})
	t.Logf("started %s: sbtrain %s", s, strings.Join(args, " "))
	return p
}

// waitHTTP polls u until it answers as a kubelet probe counts success
// (200-399), the budget runs out or the process exits.
func waitHTTP(u string, budget time.Duration, p *localProc) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(budget)
	var last error
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("the process exited: %v", p.cmd.ProcessState)
		}
		resp, err := client.Get(u)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode >= 200 && resp.StatusCode < 400 {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("no success within %s: %v", budget, last)
}

// syncBuffer is a bytes.Buffer for a process's output, read while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
