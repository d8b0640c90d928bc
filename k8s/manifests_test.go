package k8s_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/sbtrain/sbtrain/config"
)

var (
	renderMu    sync.Mutex
	renderCache = map[string][]object{}
)

// eachOverlay runs f on every overlay's rendered objects, one subtest each.
func eachOverlay(t *testing.T, f func(t *testing.T, objs []object)) {
	t.Helper()
	for _, dir := range overlays {
		t.Run(path.Base(dir), func(t *testing.T) {
			f(t, rendered(t, dir))
		})
	}
}

// rendered renders an overlay once per test process.
func rendered(t *testing.T, dir string) []object {
	t.Helper()
	renderMu.Lock()
	defer renderMu.Unlock() // render may end the test (runtime.Goexit)
	objs, ok := renderCache[dir]
	if !ok {
		objs = render(t, filepath.Join(k8sDir, dir))
		renderCache[dir] = objs
	}
	return objs
}

// sbtrainContainer is a container that runs the sbtrain image.
type sbtrainContainer struct {
	w   workload
	c   corev1.Container
	inv invocation
	env map[string]envSource
}

func (s sbtrainContainer) String() string { return fmt.Sprintf("%s container %s", s.w, s.c.Name) }

// isSbtrainImage says whether an image reference is the sbtrain image,
// whatever registry and tag an overlay gives it.
func isSbtrainImage(image string) bool {
	name := image
	if i := strings.LastIndex(name, "/"); i >= 0 {
		name = name[i+1:]
	}
	name, _, _ = strings.Cut(name, "@")
	name, _, _ = strings.Cut(name, ":")
	return name == "sbtrain"
}

// sbtrainContainers finds every sbtrain container, parses its command line
// against the binary's flags and resolves its environment; any error there
// fails the test.
func sbtrainContainers(t *testing.T, objs []object) []sbtrainContainer {
	t.Helper()
	var out []sbtrainContainer
	for _, w := range workloads(objs) {
		spec := &w.tmpl.Spec
		for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
			if !isSbtrainImage(c.Image) {
				continue
			}
			env, _, err := containerEnv(objs, w.namespace, spec, c)
			if err != nil {
				t.Errorf("%s container %s: %v", w, c.Name, err)
				continue
			}
			inv, err := parseInvocation(t, c.Args)
			if err != nil {
				t.Errorf("%s container %s: args %q: %v", w, c.Name, c.Args, err)
				continue
			}
			out = append(out, sbtrainContainer{w: w, c: c, inv: inv, env: env})
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	if len(out) == 0 {
		t.Fatal("no container runs the sbtrain image")
	}
	return out
}

// flag returns a flag's value with $(VAR)s expanded.
func (s sbtrainContainer) flag(t *testing.T, name string) (string, bool) {
	t.Helper()
	raw, ok := s.inv.flags[name]
	if !ok {
		return "", false
	}
	v, err := expand(raw, s.env)
	if err != nil {
		t.Fatalf("%s: --%s: %v", s, name, err)
	}
	return v, true
}

// mustFlag is flag for a flag the deployment cannot do without.
func (s sbtrainContainer) mustFlag(t *testing.T, name string) string {
	t.Helper()
	v, ok := s.flag(t, name)
	if !ok {
		t.Fatalf("%s: sbtrain %s without --%s", s, s.inv.command, name)
	}
	return v
}

func byCommand(cs []sbtrainContainer, command string) []sbtrainContainer {
	var out []sbtrainContainer
	for _, c := range cs {
		if c.inv.command == command {
			out = append(out, c)
		}
	}
	return out
}

func one(t *testing.T, cs []sbtrainContainer, command string) sbtrainContainer {
	t.Helper()
	got := byCommand(cs, command)
	if len(got) != 1 {
		t.Fatalf("want one container running sbtrain %s, found %d", command, len(got))
	}
	return got[0]
}

// TestOverlaysRender renders each overlay and decodes every object strictly
// (render fails the test on any decoding error), and checks that each
// overlay deploys a whole run.
func TestOverlaysRender(t *testing.T) {
	eachOverlay(t, func(t *testing.T, objs []object) {
		kinds := map[string]int{}
		seen := map[string]bool{}
		for _, o := range objs {
			kinds[o.gvk.Kind]++
			id := o.gvk.Kind + " " + o.namespace + "/" + o.name
			if seen[id] {
				t.Errorf("%s rendered twice", id)
			}
			seen[id] = true
			if o.gvk.Kind != "Namespace" && o.namespace == "" {
				t.Errorf("%s has no namespace", o)
			}
		}
		for _, k := range []string{"Namespace", "ConfigMap", "Secret", "Service", "Deployment", "Job"} {
			if kinds[k] == 0 {
				t.Errorf("no %s rendered (got %v)", k, kinds)
			}
		}
		for _, ns := range all[*corev1.Namespace](objs) {
			for _, o := range objs {
				if o.namespace != "" && o.namespace != ns.Name {
					t.Errorf("%s is outside the namespace %s this overlay creates", o, ns.Name)
				}
			}
		}
	})
}

// TestServicesSelectPods: every Service selects some pod template, and
// every port it forwards to exists in each pod it selects.
func TestServicesSelectPods(t *testing.T) {
	eachOverlay(t, func(t *testing.T, objs []object) {
		ws := workloads(objs)
		for _, svc := range all[*corev1.Service](objs) {
			if svc.Spec.Type == corev1.ServiceTypeExternalName {
				continue
			}
			var matched []workload
			for _, w := range ws {
				if w.namespace == svc.Namespace && selects(svc.Spec.Selector, w.tmpl.Labels) {
					matched = append(matched, w)
				}
			}
			if len(matched) == 0 {
				t.Errorf("Service %s/%s: selector %v matches no pod template", svc.Namespace, svc.Name, svc.Spec.Selector)
				continue
			}
			for _, w := range matched {
				for _, p := range svc.Spec.Ports {
					target := p.TargetPort
					if target.Type == intstr.Int && target.IntVal == 0 {
						target = intstr.FromInt32(p.Port)
					}
					if _, _, ok := podPort(&w.tmpl.Spec, target, p.Protocol); !ok {
						t.Errorf("Service %s/%s port %s (%d/%s) targets %s, which %s does not declare",
							svc.Namespace, svc.Name, p.Name, p.Port, p.Protocol, target.String(), w)
					}
				}
			}
		}
	})
}

// TestProbesUseDeclaredPorts: every probe's port is one its container
// declares, and an sbtrain HTTP probe targets the port sbtrain serves HTTP
// on (--http).
func TestProbesUseDeclaredPorts(t *testing.T) {
	eachOverlay(t, func(t *testing.T, objs []object) {
		for _, w := range workloads(objs) {
			for _, c := range w.tmpl.Spec.Containers {
				for kind, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
					if p == nil {
						continue
					}
					var port intstr.IntOrString
					switch {
					case p.HTTPGet != nil:
						port = p.HTTPGet.Port
					case p.TCPSocket != nil:
						port = p.TCPSocket.Port
					case p.GRPC != nil:
						port = intstr.FromInt32(p.GRPC.Port)
					case p.Exec != nil:
						if isSbtrainImage(c.Image) {
							t.Errorf("%s container %s: %s probe runs a command, but the sbtrain image has only the binary", w, c.Name, kind)
						}
						continue
					}
					if _, ok := containerPort(c, port, corev1.ProtocolTCP); !ok {
						t.Errorf("%s container %s: %s probe port %s is not a declared TCP port", w, c.Name, kind, port.String())
					}
				}
			}
		}
		for _, s := range sbtrainContainers(t, objs) {
			for kind, p := range map[string]*corev1.Probe{"liveness": s.c.LivenessProbe, "readiness": s.c.ReadinessProbe, "startup": s.c.StartupProbe} {
				if p == nil || p.HTTPGet == nil {
					continue
				}
				addr, ok := s.flag(t, "http")
				if !ok {
					t.Errorf("%s: %s probe over HTTP, but sbtrain %s is not given --http", s, kind, s.inv.command)
					continue
				}
				_, port, err := net.SplitHostPort(addr)
				cp, _ := containerPort(s.c, p.HTTPGet.Port, corev1.ProtocolTCP)
				if err != nil || port != strconv.Itoa(int(cp.ContainerPort)) {
					t.Errorf("%s: %s probe targets container port %d, sbtrain serves HTTP on --http %s", s, kind, cp.ContainerPort, addr)
				}
			}
		}
	})
}

// TestCommandLines: every sbtrain container's flags exist in the binary
// (sbtrainContainers parses them against `sbtrain <command> --help`), every
// $(VAR) in them is defined, and every value parses as its flag's type.
func TestCommandLines(t *testing.T) {
	eachOverlay(t, func(t *testing.T, objs []object) {
		binary := ""
		for _, s := range sbtrainContainers(t, objs) {
			if len(s.c.Command) != 1 {
				t.Errorf("%s: command %q: want the binary alone, and its arguments in args", s, s.c.Command)
			} else if binary == "" {
				binary = s.c.Command[0]
			} else if s.c.Command[0] != binary {
				t.Errorf("%s: command %q, other containers run %q", s, s.c.Command[0], binary)
			}
			for name, raw := range s.inv.flags {
				v, err := expand(raw, s.env)
				if err != nil {
					t.Errorf("%s: --%s: %v", s, name, err)
					continue
				}
				if err := checkValue(s.inv.defs[name], v); err != nil {
					t.Errorf("%s: --%s=%q (%q once expanded): not a valid %s: %v", s, name, raw, v, s.inv.defs[name].typ, err)
				}
			}
			for _, name := range []string{"s3-access-key", "s3-secret-key"} {
				if _, ok := s.inv.flags[name]; ok {
					t.Errorf("%s: --%s puts a credential on the command line; use the Secret's AWS_* variables", s, name)
				}
			}
		}
	})
}

// TestEnvIsRead: every variable an sbtrain container sets is read by the
// binary (found in its source), by code linked into it (the Go runtime,
// OpenBLAS), or used in its arguments; and every $(VAR) is defined.
func TestEnvIsRead(t *testing.T) {
	read := envReadByBinary(t)
	eachOverlay(t, func(t *testing.T, objs []object) {
		for _, s := range sbtrainContainers(t, objs) {
			used := referencedVars(s.c)
			_, order, err := containerEnv(objs, s.w.namespace, &s.w.tmpl.Spec, s.c)
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range order {
				if !read[name] && envReadByRuntime[name] == "" && !used[name] {
					t.Errorf("%s sets %s, which sbtrain does not read and no argument uses", s, name)
				}
			}
			for name := range used {
				if _, ok := s.env[name]; !ok {
					t.Errorf("%s uses $(%s) but does not define it: the kubelet would pass it on verbatim", s, name)
				}
			}
		}
	})
}

// TestRunConfigIsValid: --config names a file of a mounted ConfigMap, and
// that file passes the config package's validation and the binary's own
// check (`sbtrain config --check`, which also prepares the experiment).
func TestRunConfigIsValid(t *testing.T) {
	eachOverlay(t, func(t *testing.T, objs []object) {
		checked := map[string]bool{}
		for _, s := range sbtrainContainers(t, objs) {
			file, ok := s.flag(t, "config")
			if !ok {
				if _, takes := s.inv.defs["config"]; takes {
					t.Errorf("%s: no --config: it would run the embedded default config, not the deployment's", s)
				}
				continue
			}
			data, src, err := mountedFile(objs, s.w, s.c, file)
			if err != nil {
				t.Errorf("%s: --config %s: %v", s, file, err)
				continue
			}
			if checked[src] {
				continue
			}
			checked[src] = true
			cfg, err := config.Parse([]byte(data), src)
			if err != nil {
				t.Errorf("%s: %v", src, err)
				continue
			}
			if cfg.Name == "" {
				t.Errorf("%s: the run config has no name: the run ID would be empty", src)
			}
			f := filepath.Join(t.TempDir(), "run.yaml")
			if err := os.WriteFile(f, []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(sbtrainBinary(t), "config", "--check", f).CombinedOutput(); err != nil {
				t.Errorf("sbtrain config --check %s (%s): %v\n%s", src, f, err, out)
			}
		}
		if len(checked) == 0 {
			t.Error("no container reads a run config")
		}
	})
}

// mountedFile finds the ConfigMap key a container sees at path file.
func mountedFile(objs []object, w workload, c corev1.Container, file string) (data, source string, err error) {
	for _, m := range c.VolumeMounts {
		rel, ok := strings.CutPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/")
		if m.SubPath != "" {
			rel, ok = m.SubPath, file == m.MountPath
		}
		if !ok {
			continue
		}
		i := slices.IndexFunc(w.tmpl.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		if i < 0 {
			return "", "", fmt.Errorf("volume mount %s has no volume", m.Name)
		}
		v := w.tmpl.Spec.Volumes[i]
		if v.ConfigMap == nil {
			return "", "", fmt.Errorf("mounted from volume %s, which is not a ConfigMap", v.Name)
		}
		key := rel
		for _, it := range v.ConfigMap.Items {
			if it.Path == rel {
				key = it.Key
			}
		}
		cm, ok := find[*corev1.ConfigMap](objs, w.namespace, v.ConfigMap.Name)
		if !ok {
			return "", "", fmt.Errorf("no ConfigMap %s/%s", w.namespace, v.ConfigMap.Name)
		}
		d, ok := cm.Data[key]
		if !ok {
			return "", "", fmt.Errorf("ConfigMap %s/%s has no key %q", w.namespace, cm.Name, key)
		}
		return d, fmt.Sprintf("ConfigMap %s/%s key %s", w.namespace, cm.Name, key), nil
	}
	return "", "", fmt.Errorf("no volume is mounted there")
}

// serviceDNS parses <service>.<namespace>.svc[.<cluster domain>].
func serviceDNS(host string) (svc, ns string, ok bool) {
	parts := strings.Split(strings.TrimSuffix(host, "."), ".")
	if len(parts) < 3 || parts[2] != "svc" {
		return "", "", false
	}
	return parts[0], parts[1], true
}

// servicePort finds the Service behind a DNS name and port, and the
// container port it forwards to in the pod template it selects.
func servicePort(objs []object, hostport string) (*corev1.Service, workload, corev1.Container, corev1.ContainerPort, error) {
	var (
		w workload
		c corev1.Container
		p corev1.ContainerPort
	)
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, w, c, p, err
	}
	name, ns, ok := serviceDNS(host)
	if !ok {
		return nil, w, c, p, fmt.Errorf("%s is not a Service's DNS name <service>.<namespace>.svc", host)
	}
	svc, ok := find[*corev1.Service](objs, ns, name)
	if !ok {
		return nil, w, c, p, fmt.Errorf("no Service %s in namespace %s", name, ns)
	}
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		q := &svc.Spec.Ports[i]
		if strconv.Itoa(int(q.Port)) == port && (q.Protocol == "" || q.Protocol == corev1.ProtocolTCP) {
			sp = q
		}
	}
	if sp == nil {
		return nil, w, c, p, fmt.Errorf("Service %s/%s has no TCP port %s", ns, name, port)
	}
	var matched []workload
	for _, cand := range workloads(objs) {
		if cand.namespace == ns && selects(svc.Spec.Selector, cand.tmpl.Labels) {
			matched = append(matched, cand)
		}
	}
	if len(matched) != 1 {
		return nil, w, c, p, fmt.Errorf("Service %s/%s selects %d pod templates, want 1", ns, name, len(matched))
	}
	w = matched[0]
	target := sp.TargetPort
	if target.Type == intstr.Int && target.IntVal == 0 {
		target = intstr.FromInt32(sp.Port)
	}
	c, p, ok = podPort(&w.tmpl.Spec, target, corev1.ProtocolTCP)
	if !ok {
		return nil, w, c, p, fmt.Errorf("Service %s/%s port %d targets %s, which %s does not declare", ns, name, sp.Port, target.String(), w)
	}
	return svc, w, c, p, nil
}

// addrPort checks that an address flag binds a pod-IP variable (or all
// interfaces) and returns its port.
func addrPort(t *testing.T, s sbtrainContainer, flag string, wantPodIP bool) int {
	t.Helper()
	raw := s.inv.flags[flag]
	host, port, err := net.SplitHostPort(s.mustFlag(t, flag))
	if err != nil {
		t.Fatalf("%s: --%s %q: %v", s, flag, raw, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n == 0 {
		t.Fatalf("%s: --%s %q: the port must be fixed, to match the declared container port", s, flag, raw)
	}
	if wantPodIP {
		rawHost, _, _ := strings.Cut(raw, ":")
		m := varRefRE.FindStringSubmatch(rawHost)
		if m == nil || m[0] != rawHost || s.env[m[1]].fieldRef != "status.podIP" {
			t.Errorf("%s: --%s %q: the host must be the pod IP ($(VAR) with VAR from the downward API's status.podIP): sbtrain advertises the address it binds", s, flag, raw)
		}
	} else if ip := net.ParseIP(host); ip == nil {
		t.Errorf("%s: --%s %q: not an IP address", s, flag, raw)
	}
	return n
}

// declared checks that a container declares a port (TCP) and returns its
// name.
func declared(t *testing.T, s sbtrainContainer, port int, proto corev1.Protocol) string {
	t.Helper()
	p, ok := containerPort(s.c, intstr.FromInt(port), proto)
	if !ok {
		t.Errorf("%s binds %s port %d but does not declare it", s, proto, port)
	}
	return p.Name
}

// TestTrainersReachCoordinator: the trainers' --join names the coordinator's
// Service (its name, namespace and gossip port), which forwards to the
// port the coordinator's --gossip binds; the coordinator binds its pod IP,
// which it advertises; its ports are declared.
func TestTrainersReachCoordinator(t *testing.T) {
	eachOverlay(t, func(t *testing.T, objs []object) {
		cs := sbtrainContainers(t, objs)
		coord := one(t, cs, "coordinator")
		gossip := addrPort(t, coord, "gossip", true)
		grpc := addrPort(t, coord, "grpc", true)
		if _, ok := coord.flag(t, "http"); ok {
			httpPort := addrPort(t, coord, "http", false)
			declared(t, coord, httpPort, corev1.ProtocolTCP)
		}
		declared(t, coord, gossip, corev1.ProtocolTCP)
		declared(t, coord, gossip, corev1.ProtocolUDP)
		declared(t, coord, grpc, corev1.ProtocolTCP)
		for _, tr := range byCommand(cs, "trainer") {
			join := tr.mustFlag(t, "join")
			svc, w, c, p, err := servicePort(objs, join)
			if err != nil {
				t.Errorf("%s: --join %s: %v", tr, join, err)
				continue
			}
			if w.owner.name != coord.w.owner.name || c.Name != coord.c.Name {
				t.Errorf("%s: --join %s reaches %s container %s, not the coordinator", tr, join, w, c.Name)
			}
			if int(p.ContainerPort) != gossip {
				t.Errorf("%s: --join %s reaches port %d, the coordinator gossips on %d", tr, join, p.ContainerPort, gossip)
			}
			if svc.Spec.ClusterIP == corev1.ClusterIPNone {
				t.Errorf("%s: --join %s is a headless Service: its DNS answer changes with the coordinator pod", tr, join)
			}
		}
	})
}

// TestTrainersAddressing: trainers bind and advertise their pod IP on fixed
// ports they declare; their pods are in the subdomain of a headless Service
// that selects them, so sbtrain-trainers-<i>.<subdomain>.<ns>.svc resolves;
// their IDs come from the completion index of an Indexed Job.
func TestTrainersAddressing(t *testing.T) {
	eachOverlay(t, func(t *testing.T, objs []object) {
		trainers := byCommand(sbtrainContainers(t, objs), "trainer")
		if len(trainers) == 0 {
			t.Fatal("no trainer")
		}
		for _, tr := range trainers {
			host := tr.inv.flags["host"]
			m := varRefRE.FindStringSubmatch(host)
			if m == nil || m[0] != host || tr.env[m[1]].fieldRef != "status.podIP" {
				t.Errorf("%s: --host %q: want the pod IP from the downward API: trainers advertise the address they bind", tr, host)
			}
			for _, f := range []string{"gossip-port", "ring-port"} {
				v := tr.mustFlag(t, f)
				n, _ := strconv.Atoi(v)
				if n == 0 {
					t.Errorf("%s: --%s %s: want a fixed port", tr, f, v)
					continue
				}
				declared(t, tr, n, corev1.ProtocolTCP)
				if f == "gossip-port" {
					declared(t, tr, n, corev1.ProtocolUDP)
				}
			}
			spec := tr.w.tmpl.Spec
			svc, ok := find[*corev1.Service](objs, tr.w.namespace, spec.Subdomain)
			switch {
			case spec.Subdomain == "":
				t.Errorf("%s: no subdomain: trainer pods get no DNS names", tr)
			case !ok:
				t.Errorf("%s: subdomain %s is not a Service in %s", tr, spec.Subdomain, tr.w.namespace)
			case svc.Spec.ClusterIP != corev1.ClusterIPNone:
				t.Errorf("%s: subdomain Service %s is not headless", tr, svc.Name)
			case !selects(svc.Spec.Selector, tr.w.tmpl.Labels):
				t.Errorf("%s: subdomain Service %s does not select the trainer pods", tr, svc.Name)
			}
			job, ok := tr.w.owner.obj.(*batchv1.Job)
			if !ok {
				t.Errorf("%s: trainers run as a %s, want an Indexed Job", tr, tr.w.owner.gvk.Kind)
				continue
			}
			id := tr.inv.flags["id"]
			if !strings.Contains(id, "$(JOB_COMPLETION_INDEX)") {
				t.Errorf("%s: --id %q does not use $(JOB_COMPLETION_INDEX): trainer IDs must be unique and stable across a pod's replacements", tr, id)
			}
			if job.Spec.CompletionMode == nil || *job.Spec.CompletionMode != batchv1.IndexedCompletion {
				t.Errorf("%s: not an Indexed Job: there is no completion index", tr)
			}
		}
	})
}

// TestWorkerCount: the trainer Job's parallelism, its completions and the
// coordinator's --workers agree (the overlays set the first and copy it).
func TestWorkerCount(t *testing.T) {
	eachOverlay(t, func(t *testing.T, objs []object) {
		cs := sbtrainContainers(t, objs)
		coord := one(t, cs, "coordinator")
		workers, err := strconv.Atoi(coord.mustFlag(t, "workers"))
		if err != nil {
			t.Fatal(err)
		}
		for _, tr := range byCommand(cs, "trainer") {
			job := tr.w.owner.obj.(*batchv1.Job)
			p, c := job.Spec.Parallelism, job.Spec.Completions
			if p == nil || c == nil || int(*p) != workers || int(*c) != workers {
				t.Errorf("%s: parallelism %v, completions %v, coordinator --workers %d: want all equal", tr.w, deref(p), deref(c), workers)
			}
		}
	})
}

func deref(p *int32) any {
	if p == nil {
		return "unset"
	}
	return *p
}

// TestWorkloadShape: the controllers behave as a run needs.
func TestWorkloadShape(t *testing.T) {
	eachOverlay(t, func(t *testing.T, objs []object) {
		cs := sbtrainContainers(t, objs)
		coord := one(t, cs, "coordinator")
		d, ok := coord.w.owner.obj.(*appsv1.Deployment)
		switch {
		case !ok:
			t.Errorf("the coordinator runs as a %s, want a Deployment", coord.w.owner.gvk.Kind)
		case d.Spec.Replicas == nil || *d.Spec.Replicas != 1:
			t.Errorf("%s: replicas %v: one coordinator per run", coord.w, deref(d.Spec.Replicas))
		case d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType:
			t.Errorf("%s: strategy %q: want Recreate, a second coordinator is refused by the run's lease", coord.w, d.Spec.Strategy.Type)
		}
		for _, tr := range byCommand(cs, "trainer") {
			job := tr.w.owner.obj.(*batchv1.Job)
			if job.Spec.BackoffLimitPerIndex == nil {
				t.Errorf("%s: no backoffLimitPerIndex: a crashed trainer must be replaced under its index", tr.w)
			}
			if job.Spec.PodFailurePolicy == nil || len(job.Spec.PodFailurePolicy.Rules) == 0 {
				t.Errorf("%s: no podFailurePolicy", tr.w)
			}
			if job.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyNever {
				t.Errorf("%s: restartPolicy %q: podFailurePolicy needs Never", tr.w, job.Spec.Template.Spec.RestartPolicy)
			}
			if job.Spec.Selector != nil || job.Spec.ManualSelector != nil {
				t.Errorf("%s: sets its selector: let the Job controller generate it", tr.w)
			}
		}
	})
}

// TestPodSecurity: every container runs as non-root without privilege
// escalation or capabilities, on a read-only root filesystem, with
// requests and limits; sbtrain containers get a writable /tmp.
func TestPodSecurity(t *testing.T) {
	eachOverlay(t, func(t *testing.T, objs []object) {
		for _, w := range workloads(objs) {
			spec := w.tmpl.Spec
			for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
				where := fmt.Sprintf("%s container %s", w, c.Name)
				sc := c.SecurityContext
				if sc == nil {
					t.Errorf("%s: no securityContext", where)
					continue
				}
				nonRoot := sc.RunAsNonRoot
				if nonRoot == nil && spec.SecurityContext != nil {
					nonRoot = spec.SecurityContext.RunAsNonRoot
				}
				if nonRoot == nil || !*nonRoot {
					t.Errorf("%s: runAsNonRoot is not true", where)
				}
				if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
					t.Errorf("%s: allowPrivilegeEscalation is not false", where)
				}
				if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
					t.Errorf("%s: readOnlyRootFilesystem is not true", where)
				}
				if sc.Privileged != nil && *sc.Privileged {
					t.Errorf("%s: privileged", where)
				}
				if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
					t.Errorf("%s: capabilities: want drop ALL and add none", where)
				}
				for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
					if _, ok := c.Resources.Requests[r]; !ok {
						t.Errorf("%s: no %s request", where, r)
					}
					if _, ok := c.Resources.Limits[r]; !ok {
						t.Errorf("%s: no %s limit", where, r)
					}
				}
				for _, m := range c.VolumeMounts {
					if !slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name }) &&
						!slices.ContainsFunc(volumeClaims(w), func(n string) bool { return n == m.Name }) {
						t.Errorf("%s: mounts volume %s, which the pod does not have", where, m.Name)
					}
				}
				if isSbtrainImage(c.Image) && !mountsEmptyDir(spec, c, "/tmp") {
					t.Errorf("%s: no emptyDir at /tmp: the image's HOME and TMPDIR, on a read-only root", where)
				}
			}
		}
	})
}

func volumeClaims(w workload) []string {
	var out []string
	if s, ok := w.owner.obj.(*appsv1.StatefulSet); ok {
		for _, c := range s.Spec.VolumeClaimTemplates {
			out = append(out, c.Name)
		}
	}
	return out
}

func mountsEmptyDir(spec corev1.PodSpec, c corev1.Container, at string) bool {
	for _, m := range c.VolumeMounts {
		if m.MountPath != at || m.ReadOnly {
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name == m.Name && v.EmptyDir != nil {
				return true
			}
		}
	}
	return false
}

// TestStoreEndpoint: an S3 endpoint inside the cluster is a Service that
// exists and forwards the port; the store URL parses.
func TestStoreEndpoint(t *testing.T) {
	eachOverlay(t, func(t *testing.T, objs []object) {
		for _, s := range sbtrainContainers(t, objs) {
			store := s.mustFlag(t, "store")
			u, err := url.Parse(store)
			if err != nil || u.Scheme != "s3" || u.Host == "" {
				t.Errorf("%s: --store %q: pods share no file system, want s3://bucket/prefix", s, store)
			}
			ep := s.env["AWS_ENDPOINT_URL_S3"].value
			if v := u.Query().Get("endpoint"); v != "" {
				ep = v
			}
			if ep == "" {
				continue
			}
			eu, err := url.Parse(ep)
			if err != nil || eu.Host == "" {
				t.Errorf("%s: S3 endpoint %q: want http(s)://host:port", s, ep)
				continue
			}
			if _, _, inCluster := serviceDNS(eu.Hostname()); !inCluster {
				continue
			}
			hp := eu.Host
			if eu.Port() == "" {
				hp = net.JoinHostPort(eu.Hostname(), map[string]string{"http": "80", "https": "443"}[eu.Scheme])
			}
			if _, _, _, _, err := servicePort(objs, hp); err != nil {
				t.Errorf("%s: S3 endpoint %s: %v", s, ep, err)
			}
		}
	})
}

// dockerfile is what the tests need from the Dockerfile's final stage.
type dockerfile struct {
	user       string
	entrypoint []string
	copies     []string // destinations of COPY --from=...
	env        map[string]string
	buildRuns  []string // RUN lines of the earlier stages
}

func parseDockerfile(t *testing.T) dockerfile {
	t.Helper()
	f, err := os.Open(filepath.Join(k8sDir, "..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "#") || l == "" && cur.Len() == 0 {
			continue
		}
		if s, ok := strings.CutSuffix(l, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(l)
		lines = append(lines, cur.String())
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	var stages [][]string
	for _, l := range lines {
		if strings.HasPrefix(strings.ToUpper(l), "FROM ") {
			stages = append(stages, nil)
		}
		if len(stages) > 0 {
			stages[len(stages)-1] = append(stages[len(stages)-1], l)
		}
	}
	if len(stages) < 2 {
		t.Fatalf("Dockerfile has %d stages, want a build stage and a small final one", len(stages))
	}
	d := dockerfile{env: map[string]string{}}
	for _, st := range stages[:len(stages)-1] {
		for _, l := range st {
			if strings.HasPrefix(l, "RUN ") {
				d.buildRuns = append(d.buildRuns, l)
			}
		}
	}
	for _, l := range stages[len(stages)-1] {
		instr, rest, _ := strings.Cut(l, " ")
		switch strings.ToUpper(instr) {
		case "USER":
			d.user = strings.TrimSpace(rest)
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(rest), &d.entrypoint); err != nil {
				t.Errorf("ENTRYPOINT %s: want the exec (JSON) form: %v", rest, err)
			}
		case "COPY":
			f := strings.Fields(rest)
			if len(f) >= 2 && strings.HasPrefix(f[0], "--from=") {
				d.copies = append(d.copies, f[len(f)-1])
			}
		case "ENV":
			for _, kv := range strings.Fields(rest) {
				k, v, _ := strings.Cut(kv, "=")
				d.env[k] = v
			}
		}
	}
	return d
}

// TestDockerfile: the image runs as a non-root user (the one the pods
// ask for), its binary is where the manifests run it from, and HOME and
// TMPDIR are on the /tmp the pods mount writable.
func TestDockerfile(t *testing.T) {
	d := parseDockerfile(t)
	uid, _, _ := strings.Cut(d.user, ":")
	n, err := strconv.Atoi(uid)
	switch {
	case d.user == "":
		t.Error("the final stage sets no USER: the image would run as root")
	case err != nil:
		t.Errorf("USER %s: want a numeric UID, so that runAsNonRoot can verify it", d.user)
	case n == 0:
		t.Errorf("USER %s is root", d.user)
	}
	if len(d.entrypoint) == 0 {
		t.Fatal("no ENTRYPOINT in the final stage")
	}
	bin := d.entrypoint[0]
	if !slices.Contains(d.copies, bin) {
		t.Errorf("the final stage copies %v from the build, not the ENTRYPOINT %s", d.copies, bin)
	}
	for _, k := range []string{"HOME", "TMPDIR"} {
		if d.env[k] != "/tmp" {
			t.Errorf("ENV %s=%q: want /tmp, the writable emptyDir of the pods", k, d.env[k])
		}
	}
	if !slices.ContainsFunc(d.buildRuns, func(l string) bool { return strings.Contains(l, "make build") }) {
		t.Error("the build stage does not run make build (which links OpenBLAS when it can)")
	}
	eachOverlay(t, func(t *testing.T, objs []object) {
		for _, s := range sbtrainContainers(t, objs) {
			if len(s.c.Command) == 0 || s.c.Command[0] != bin {
				t.Errorf("%s: command %q, the image's binary is %s", s, s.c.Command, bin)
			}
			for _, sc := range []*int64{podRunAsUser(s.w.tmpl.Spec), containerRunAsUser(s.c)} {
				if sc != nil && strconv.FormatInt(*sc, 10) != uid {
					t.Errorf("%s: runAsUser %d, the image's USER is %s", s, *sc, d.user)
				}
			}
		}
	})
}

func podRunAsUser(s corev1.PodSpec) *int64 {
	if s.SecurityContext == nil {
		return nil
	}
	return s.SecurityContext.RunAsUser
}

func containerRunAsUser(c corev1.Container) *int64 {
	if c.SecurityContext == nil {
		return nil
	}
	return c.SecurityContext.RunAsUser
}

// makeVar reads a `NAME ?= value` default from the Makefile.
func makeVar(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(k8sDir, "..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\s*\?=\s*(\S+)\s*$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("Makefile has no %s ?= default", name)
	}
	return string(m[1])
}

// TestKindCluster: the kind cluster config is well-formed and its Kubernetes
// has what the manifests use; the Makefile's kind targets name the same
// cluster and load the image the kind overlay runs.
func TestKindCluster(t *testing.T) {
	f, err := os.Open(filepath.Join(k8sDir, "kind", "cluster.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cluster struct {
		Kind       string `yaml:"kind"`
		APIVersion string `yaml:"apiVersion"`
		Name       string `yaml:"name"`
		Nodes      []struct {
			Role  string `yaml:"role"`
			Image string `yaml:"image"`
		} `yaml:"nodes"`
	}
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(&cluster); err != nil {
		t.Fatalf("kind/cluster.yaml: %v", err)
	}
	if cluster.Kind != "Cluster" || cluster.APIVersion != "kind.x-k8s.io/v1alpha4" {
		t.Errorf("kind/cluster.yaml: %s %s, want kind.x-k8s.io/v1alpha4 Cluster", cluster.APIVersion, cluster.Kind)
	}
	roles := map[string]int{}
	imageRE := regexp.MustCompile(`^kindest/node:v1\.(\d+)\.\d+(@sha256:[0-9a-f]{64})?$`)
	for _, n := range cluster.Nodes {
		roles[n.Role]++
		m := imageRE.FindStringSubmatch(n.Image)
		if m == nil {
			t.Errorf("kind/cluster.yaml: node image %q: want a pinned kindest/node:v1.X.Y", n.Image)
			continue
		}
		// Elastic Indexed Jobs (rescaling) and podFailurePolicy are GA in
		// 1.31; backoffLimitPerIndex is on by default since 1.29.
		if minor, _ := strconv.Atoi(m[1]); minor < 31 {
			t.Errorf("kind/cluster.yaml: node image %s: want Kubernetes 1.31 or newer", n.Image)
		}
	}
	if roles["control-plane"] != 1 || roles["worker"] < 1 || len(roles) != 2 {
		t.Errorf("kind/cluster.yaml: roles %v: want one control-plane and workers", roles)
	}
	if got := makeVar(t, "KIND_CLUSTER"); got != cluster.Name {
		t.Errorf("Makefile KIND_CLUSTER %q, kind/cluster.yaml names the cluster %q", got, cluster.Name)
	}
	image := makeVar(t, "IMAGE")
	objs := render(t, filepath.Join(k8sDir, "overlays", "kind"))
	for _, s := range sbtrainContainers(t, objs) {
		if s.c.Image != image {
			t.Errorf("%s: image %s, make image and kind-load build and load %s", s, s.c.Image, image)
		}
		if s.c.ImagePullPolicy != corev1.PullIfNotPresent && s.c.ImagePullPolicy != corev1.PullNever {
			t.Errorf("%s: imagePullPolicy %q: kind-load puts the image on the nodes, pulling it would fail", s, s.c.ImagePullPolicy)
		}
	}
}
