package k8s_test

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// overlays are the deployable kustomizations; every check runs on each.
var overlays = []string{"overlays/kind", "overlays/cluster"}

// object is one rendered manifest, strictly decoded.
type object struct {
	gvk       schema.GroupVersionKind
	name      string
	namespace string
	json      []byte         // as kustomize rendered it
	obj       runtime.Object // the typed object
}

func (o object) String() string { return fmt.Sprintf("%s %s/%s", o.gvk.Kind, o.namespace, o.name) }

// codec decodes YAML or JSON into the k8s.io/api types strictly: unknown
// and duplicate fields are errors, field names are case-sensitive, and a
// kind the scheme does not know is an error (add its group to the scheme
// only together with the checks it needs).
var codec = func() runtime.Decoder {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, s, s, kjson.SerializerOptions{Yaml: true, Strict: true})
}()

// render builds a kustomization in-process, as `kubectl apply -k` would,
// and decodes every object strictly.
func render(t *testing.T, dir string) []object {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var out []object
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatalf("%s: %s: %v", dir, r.CurId(), err)
		}
		j, err := r.MarshalJSON()
		if err != nil {
			t.Fatalf("%s: %s: %v", dir, r.CurId(), err)
		}
		obj, gvk, err := codec.Decode(y, nil, nil)
		if err != nil {
			t.Errorf("%s: %s does not decode strictly into the Kubernetes API types: %v", dir, r.CurId(), err)
			continue
		}
		out = append(out, object{gvk: *gvk, name: r.GetName(), namespace: r.GetNamespace(), json: j, obj: obj})
	}
	if t.Failed() {
		t.FailNow()
	}
	return out
}

// workload is a pod template and what owns it.
type workload struct {
	owner     object
	namespace string
	tmpl      *corev1.PodTemplateSpec
}

func (w workload) String() string { return w.owner.String() }

func workloads(objs []object) []workload {
	var out []workload
	for _, o := range objs {
		var tmpl *corev1.PodTemplateSpec
		switch v := o.obj.(type) {
		case *appsv1.Deployment:
			tmpl = &v.Spec.Template
		case *appsv1.StatefulSet:
			tmpl = &v.Spec.Template
		case *appsv1.DaemonSet:
			tmpl = &v.Spec.Template
		case *batchv1.Job:
			tmpl = &v.Spec.Template
		case *corev1.Pod:
			tmpl = &corev1.PodTemplateSpec{ObjectMeta: v.ObjectMeta, Spec: v.Spec}
		default:
			continue
		}
		out = append(out, workload{owner: o, namespace: o.namespace, tmpl: tmpl})
	}
	return out
}

func find[T runtime.Object](objs []object, namespace, name string) (T, bool) {
	for _, o := range objs {
		if v, ok := o.obj.(T); ok && o.namespace == namespace && o.name == name {
			return v, true
		}
	}
	var zero T
	return zero, false
}

func all[T runtime.Object](objs []object) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.obj.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// selects says whether a Service selector picks pods with these labels.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// containerPort finds the port a Service targetPort or a probe's port names
// in a container.
func containerPort(c corev1.Container, port intstr.IntOrString, proto corev1.Protocol) (corev1.ContainerPort, bool) {
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	for _, p := range c.Ports {
		pp := p.Protocol
		if pp == "" {
			pp = corev1.ProtocolTCP
		}
		if pp != proto {
			continue
		}
		if port.Type == intstr.String && p.Name == port.StrVal || port.Type == intstr.Int && p.ContainerPort == port.IntVal {
			return p, true
		}
	}
	return corev1.ContainerPort{}, false
}

// podPort finds a port among all containers of a pod.
func podPort(spec *corev1.PodSpec, port intstr.IntOrString, proto corev1.Protocol) (corev1.Container, corev1.ContainerPort, bool) {
	for _, c := range spec.Containers {
		if p, ok := containerPort(c, port, proto); ok {
			return c, p, true
		}
	}
	return corev1.Container{}, corev1.ContainerPort{}, false
}

// The sbtrain binary, built once per test process from the source next
// door, so that its flags are the CLI's own.
var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

func sbtrainBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if p := os.Getenv("SBTRAIN_K8S_TEST_BIN"); p != "" {
			binPath = p // the parent test process built it
			return
		}
		binDir, binErr = os.MkdirTemp("", "sbtrain-k8s-test")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "sbtrain")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/sbtrain")
		cmd.Dir = repoRoot
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build ./cmd/sbtrain: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// repoRoot is the module root, where the binary is built from; tests run
// in k8s/.
const repoRoot = ".."

// k8sDir is the directory of the manifests under test, with the Dockerfile
// and Makefile in its parent: this one, or a mutated copy that
// TestChecksCatchMistakes points a child test process at.
var k8sDir = cmp.Or(os.Getenv("SBTRAIN_K8S_TEST_DIR"), ".")

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// flagDef is one flag as the binary's --help prints it.
type flagDef struct {
	name string
	typ  string // "" for a boolean flag, else the value's name: int, duration, string, ...
}

var (
	helpMu    sync.Mutex
	helpCache = map[string]map[string]flagDef{}
	// Go's flag.PrintDefaults: "  -name type" (no type for a bool flag),
	// the usage on the next line.
	helpFlagRE = regexp.MustCompile(`^  -([A-Za-z0-9][A-Za-z0-9_.-]*)(?:[ \t]+([A-Za-z0-9_.-]+))?\s*$`)
)

// commandFlags runs `sbtrain <command> --help` and parses its flags.
func commandFlags(t *testing.T, command string) map[string]flagDef {
	t.Helper()
	helpMu.Lock()
	defer helpMu.Unlock()
	if f, ok := helpCache[command]; ok {
		return f
	}
	var out bytes.Buffer
	cmd := exec.Command(sbtrainBinary(t), command, "--help")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("sbtrain %s --help: %v\n%s", command, err, out.String())
	}
	flags := map[string]flagDef{}
	for line := range strings.SplitSeq(out.String(), "\n") {
		if m := helpFlagRE.FindStringSubmatch(line); m != nil {
			flags[m[1]] = flagDef{name: m[1], typ: m[2]}
		}
	}
	if len(flags) == 0 {
		t.Fatalf("sbtrain %s --help lists no flags:\n%s", command, out.String())
	}
	helpCache[command] = flags
	return flags
}

// invocation is a container's command line parsed against the binary's
// flags: the subcommand, its positional words, and each flag's raw value
// (before $(VAR) expansion).
type invocation struct {
	command    string
	positional []string
	flags      map[string]string
	defs       map[string]flagDef
}

// subcommands that take positional words before their flags.
var positionalWords = map[string]int{"ckpt": 1}

func parseInvocation(t *testing.T, args []string) (invocation, error) {
	if len(args) == 0 {
		return invocation{}, errors.New("no arguments: no subcommand")
	}
	inv := invocation{command: args[0], flags: map[string]string{}}
	inv.defs = commandFlags(t, inv.command)
	rest := args[1:]
	for len(rest) > 0 && len(inv.positional) < positionalWords[inv.command] && !strings.HasPrefix(rest[0], "-") {
		inv.positional, rest = append(inv.positional, rest[0]), rest[1:]
	}
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if !strings.HasPrefix(a, "-") || a == "-" || a == "--" {
			return inv, fmt.Errorf("argument %q: sbtrain %s takes flags only here", a, inv.command)
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		def, ok := inv.defs[name]
		if !ok {
			return inv, fmt.Errorf("flag --%s: sbtrain %s has no such flag", name, inv.command)
		}
		if _, dup := inv.flags[name]; dup {
			return inv, fmt.Errorf("flag --%s given twice", name)
		}
		if def.typ != "" && !hasVal {
			if i+1 == len(rest) {
				return inv, fmt.Errorf("flag --%s needs a value", name)
			}
			i++
			val, hasVal = rest[i], true
		}
		if !hasVal {
			val = "true"
		}
		inv.flags[name] = val
	}
	return inv, nil
}

// checkValue parses a flag's expanded value as the flag package would.
func checkValue(def flagDef, v string) error {
	var err error
	switch def.typ {
	case "":
		_, err = strconv.ParseBool(v)
	case "int", "int64":
		_, err = strconv.ParseInt(v, 0, 64)
	case "uint", "uint64":
		_, err = strconv.ParseUint(v, 0, 64)
	case "float", "float64":
		_, err = strconv.ParseFloat(v, 64)
	case "duration":
		_, err = time.ParseDuration(v)
	}
	return err
}

// envSource says where a container's environment variable comes from.
type envSource struct {
	value    string // its value, or a sample of what the kubelet would put there
	fieldRef string // downward API field path, if any
}

// sample values of downward-API fields, for expanding arguments.
var sampleFields = map[string]string{
	"status.podIP":  "10.244.1.7",
	"metadata.name": "pod-0",
	"spec.nodeName": "node-0",
	"status.hostIP": "172.18.0.2",
	"metadata.uid":  "00000000-0000-0000-0000-000000000000",
	"metadata.annotations['batch.kubernetes.io/job-completion-index']": "0",
}

// containerEnv resolves a container's environment as the kubelet would:
// envFrom first, then env in order, $(VAR) expanded in values. A reference
// to a missing ConfigMap, Secret or key is an error.
func containerEnv(objs []object, ns string, spec *corev1.PodSpec, c corev1.Container) (map[string]envSource, []string, error) {
	env := map[string]envSource{}
	var order []string
	set := func(k string, s envSource) {
		if _, ok := env[k]; !ok {
			order = append(order, k)
		}
		env[k] = s
	}
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			cm, ok := find[*corev1.ConfigMap](objs, ns, ef.ConfigMapRef.Name)
			if !ok {
				return nil, nil, fmt.Errorf("envFrom: no ConfigMap %s/%s", ns, ef.ConfigMapRef.Name)
			}
			for k, v := range cm.Data {
				set(ef.Prefix+k, envSource{value: v})
			}
		case ef.SecretRef != nil:
			s, ok := find[*corev1.Secret](objs, ns, ef.SecretRef.Name)
			if !ok {
				return nil, nil, fmt.Errorf("envFrom: no Secret %s/%s", ns, ef.SecretRef.Name)
			}
			for k, v := range s.Data {
				set(ef.Prefix+k, envSource{value: string(v)})
			}
			for k, v := range s.StringData {
				set(ef.Prefix+k, envSource{value: v})
			}
		}
	}
	for _, e := range c.Env {
		switch vf := e.ValueFrom; {
		case vf == nil:
			v, err := expand(e.Value, env)
			if err != nil {
				return nil, nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			set(e.Name, envSource{value: v})
		case vf.FieldRef != nil:
			v, ok := sampleFields[vf.FieldRef.FieldPath]
			if !ok {
				return nil, nil, fmt.Errorf("env %s: downward API field %q has no sample value in this test", e.Name, vf.FieldRef.FieldPath)
			}
			set(e.Name, envSource{value: v, fieldRef: vf.FieldRef.FieldPath})
		case vf.ResourceFieldRef != nil:
			v, err := resourceField(spec, c, vf.ResourceFieldRef)
			if err != nil {
				return nil, nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			set(e.Name, envSource{value: v})
		case vf.ConfigMapKeyRef != nil:
			cm, ok := find[*corev1.ConfigMap](objs, ns, vf.ConfigMapKeyRef.Name)
			v, hasKey := cm.Data[vf.ConfigMapKeyRef.Key]
			if !ok || !hasKey {
				return nil, nil, fmt.Errorf("env %s: no key %q in ConfigMap %s/%s", e.Name, vf.ConfigMapKeyRef.Key, ns, vf.ConfigMapKeyRef.Name)
			}
			set(e.Name, envSource{value: v})
		case vf.SecretKeyRef != nil:
			s, ok := find[*corev1.Secret](objs, ns, vf.SecretKeyRef.Name)
			v, hasKey := []byte(nil), false
			if ok {
				v, hasKey = s.Data[vf.SecretKeyRef.Key]
			}
			if !hasKey {
				return nil, nil, fmt.Errorf("env %s: no key %q in Secret %s/%s", e.Name, vf.SecretKeyRef.Key, ns, vf.SecretKeyRef.Name)
			}
			set(e.Name, envSource{value: string(v)})
		}
	}
	return env, order, nil
}

// resourceField is what a resourceFieldRef yields: the quantity divided by
// the divisor, rounded up, as the kubelet computes it.
func resourceField(spec *corev1.PodSpec, c corev1.Container, ref *corev1.ResourceFieldSelector) (string, error) {
	if ref.ContainerName != "" && ref.ContainerName != c.Name {
		i := slices.IndexFunc(spec.Containers, func(o corev1.Container) bool { return o.Name == ref.ContainerName })
		if i < 0 {
			return "", fmt.Errorf("resourceFieldRef: no container %q", ref.ContainerName)
		}
		c = spec.Containers[i]
	}
	kind, name, ok := strings.Cut(ref.Resource, ".")
	if !ok {
		return "", fmt.Errorf("resourceFieldRef %q", ref.Resource)
	}
	list := c.Resources.Limits
	if kind == "requests" {
		list = c.Resources.Requests
	}
	q, ok := list[corev1.ResourceName(name)]
	if !ok {
		return "", fmt.Errorf("resourceFieldRef %q: the container sets no %s", ref.Resource, ref.Resource)
	}
	div := ref.Divisor
	if div.IsZero() {
		div = resource.MustParse("1")
	}
	return strconv.FormatInt(int64(math.Ceil(float64(q.MilliValue())/float64(div.MilliValue()))), 10), nil
}

var varRefRE = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expand replaces $(VAR) as the kubelet does, except that an undefined
// variable is an error here: the kubelet would pass "$(VAR)" on verbatim.
func expand(s string, env map[string]envSource) (string, error) {
	var missing []string
	out := varRefRE.ReplaceAllStringFunc(s, func(m string) string {
		name := m[2 : len(m)-1]
		e, ok := env[name]
		if !ok {
			missing = append(missing, name)
			return m
		}
		return e.value
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("%q uses $(%s), which the container's environment does not define", s, strings.Join(missing, "), $("))
	}
	return out, nil
}

// referencedVars are the $(VAR)s in a container's command, args and env
// values.
func referencedVars(c corev1.Container) map[string]bool {
	out := map[string]bool{}
	var strs []string
	strs = append(strs, c.Command...)
	strs = append(strs, c.Args...)
	for _, e := range c.Env {
		strs = append(strs, e.Value)
	}
	for _, s := range strs {
		for _, m := range varRefRE.FindAllStringSubmatch(s, -1) {
			out[m[1]] = true
		}
	}
	return out
}

// envReadByBinary lists the environment variables sbtrain's own code
// reads: every Getenv/LookupEnv (or a getenv variable standing for it)
// called with a string literal in a non-test file of the module.
func envReadByBinary(t *testing.T) map[string]bool {
	t.Helper()
	read := map[string]bool{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(repoRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "k8s", "testdata", "bin", "runs", "results", "node_modules":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			var name string
			switch fn := call.Fun.(type) {
			case *ast.Ident:
				name = fn.Name
			case *ast.SelectorExpr:
				name = fn.Sel.Name
			}
			if !strings.EqualFold(name, "getenv") && !strings.EqualFold(name, "lookupenv") {
				return true
			}
			if lit, ok := call.Args[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if v, err := strconv.Unquote(lit.Value); err == nil {
					read[v] = true
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !read["AWS_ACCESS_KEY_ID"] {
		t.Fatalf("found no Getenv(\"AWS_ACCESS_KEY_ID\") in the module: the source scan is broken (found %v)", read)
	}
	return read
}

// envReadByRuntime are variables that code linked into the binary reads
// though sbtrain's own code does not: the Go runtime and OpenBLAS.
var envReadByRuntime = map[string]string{
	"GOMAXPROCS":           "Go runtime",
	"GOMEMLIMIT":           "Go runtime",
	"GOGC":                 "Go runtime",
	"GODEBUG":              "Go runtime",
	"OPENBLAS_NUM_THREADS": "OpenBLAS",
}
