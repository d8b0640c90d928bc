package k8s_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// kubeServer is a kube-apiserver reached over plain HTTPS with a bearer
// token: enough for discovery and create, without client-go.
type kubeServer struct {
	url    string
	token  string
	client *http.Client

	mu        sync.Mutex
	resources map[schema.GroupVersion][]metav1.APIResource
}

// apiServer connects to the server named by SBTRAIN_TEST_KUBE_APISERVER
// (URL), SBTRAIN_TEST_KUBE_TOKEN_FILE and SBTRAIN_TEST_KUBE_CA_FILE, as
// `.ci/kube-apiserver.sh start` prints them. Without them the test skips,
// unless CI=true: CI must not pass without the server check.
func apiServer(t *testing.T) *kubeServer {
	t.Helper()
	u := os.Getenv("SBTRAIN_TEST_KUBE_APISERVER")
	if u == "" {
		msg := "SBTRAIN_TEST_KUBE_APISERVER is not set: start a kube-apiserver with\n" +
			"  eval \"$(.ci/kube-apiserver.sh start)\"   (builds it once, 6 to 13 minutes on 2 cores)\n" +
			"or run make k8s-validate, which starts and stops one"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	tokenFile := os.Getenv("SBTRAIN_TEST_KUBE_TOKEN_FILE")
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatalf("SBTRAIN_TEST_KUBE_TOKEN_FILE: %v", err)
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca := os.Getenv("SBTRAIN_TEST_KUBE_CA_FILE"); ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			t.Fatalf("SBTRAIN_TEST_KUBE_CA_FILE: %v", err)
		}
		tlsConf.RootCAs = x509.NewCertPool()
		if !tlsConf.RootCAs.AppendCertsFromPEM(pem) {
			t.Fatalf("SBTRAIN_TEST_KUBE_CA_FILE %s: no certificate", ca)
		}
	}
	return &kubeServer{
		url:       strings.TrimSuffix(u, "/"),
		token:     strings.TrimSpace(string(tok)),
		client:    &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConf}},
		resources: map[schema.GroupVersion][]metav1.APIResource{},
	}
}

// reply is a server's answer: the status, the body and any warnings.
type reply struct {
	code     int
	body     []byte
	warnings []string
}

// message is the Status message of an error reply.
func (r reply) message() string {
	var st metav1.Status
	if json.Unmarshal(r.body, &st) == nil && st.Message != "" {
		return st.Message
	}
	return string(r.body)
}

func (k *kubeServer) do(method, p string, query url.Values, body []byte) (reply, error) {
	u := k.url + p
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		return reply{}, err
	}
	req.Header.Set("Authorization", "Bearer "+k.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	return reply{code: resp.StatusCode, body: b, warnings: resp.Header.Values("Warning")}, nil
}

// resource finds a kind's resource through the server's discovery: its
// collection path and whether it is namespaced.
func (k *kubeServer) resource(gvk schema.GroupVersionKind) (metav1.APIResource, error) {
	gv := gvk.GroupVersion()
	k.mu.Lock()
	defer k.mu.Unlock()
	list, ok := k.resources[gv]
	if !ok {
		p := "/apis/" + gv.String()
		if gv.Group == "" {
			p = "/api/" + gv.Version
		}
		r, err := k.do(http.MethodGet, p, nil, nil)
		if err != nil {
			return metav1.APIResource{}, err
		}
		if r.code != http.StatusOK {
			return metav1.APIResource{}, fmt.Errorf("discovery of %s: %d %s", gv, r.code, r.message())
		}
		var l metav1.APIResourceList
		if err := json.Unmarshal(r.body, &l); err != nil {
			return metav1.APIResource{}, fmt.Errorf("discovery of %s: %w", gv, err)
		}
		list = l.APIResources
		k.resources[gv] = list
	}
	for _, res := range list {
		if res.Kind == gvk.Kind && !strings.Contains(res.Name, "/") {
			return res, nil
		}
	}
	return metav1.APIResource{}, fmt.Errorf("the server does not serve %s", gvk)
}

// create POSTs an object; dryRun makes it a server-side dry run. Field
// validation is Strict either way: unknown or duplicate fields are errors.
func (k *kubeServer) create(gvk schema.GroupVersionKind, namespace string, body []byte, dryRun bool) (reply, error) {
	res, err := k.resource(gvk)
	if err != nil {
		return reply{}, err
	}
	p := "/apis/" + gvk.GroupVersion().String()
	if gvk.Group == "" {
		p = "/api/" + gvk.Version
	}
	if res.Namespaced {
		if namespace == "" {
			return reply{}, fmt.Errorf("%s is namespaced but has no namespace", gvk.Kind)
		}
		p = path.Join(p, "namespaces", namespace)
	}
	p = path.Join(p, res.Name)
	q := url.Values{"fieldValidation": {"Strict"}}
	if dryRun {
		q.Set("dryRun", "All")
	}
	return k.do(http.MethodPost, p, q, body)
}

// ensureNamespaces creates the overlay's namespaces for real (a dry run
// cannot create what namespaced objects need to exist in).
func ensureNamespaces(t *testing.T, k *kubeServer, objs []object) {
	t.Helper()
	for _, o := range objs {
		if o.gvk.Kind != "Namespace" {
			continue
		}
		r, err := k.create(o.gvk, "", o.json, false)
		if err != nil {
			t.Fatalf("%s: %v", o, err)
		}
		if r.code != http.StatusCreated && r.code != http.StatusConflict {
			t.Fatalf("%s: create: %d %s", o, r.code, r.message())
		}
	}
}

// TestAPIServerAcceptsOverlays applies every rendered object of every
// overlay to a real kube-apiserver with a server-side dry run and strict
// field validation: its own decoding, defaulting, validation and admission
// must accept each one, without warnings.
func TestAPIServerAcceptsOverlays(t *testing.T) {
	k := apiServer(t)
	for _, dir := range overlays {
		t.Run(path.Base(dir), func(t *testing.T) {
			objs := rendered(t, dir)
			ensureNamespaces(t, k, objs)
			for _, o := range objs {
				if o.gvk.Kind == "Namespace" {
					continue
				}
				r, err := k.create(o.gvk, o.namespace, o.json, true)
				if err != nil {
					t.Errorf("%s: %v", o, err)
					continue
				}
				if r.code != http.StatusCreated && r.code != http.StatusOK {
					t.Errorf("%s: the API server refuses it: %d %s", o, r.code, r.message())
				}
				for _, w := range r.warnings {
					t.Errorf("%s: the API server warns: %s", o, w)
				}
			}
		})
	}
}

// TestAPIServerRejectsMistakes: the server check is not a formality. Each
// case breaks one rendered object the way a manifest edit could, and the
// server must refuse it; the semantic ones (invalid combinations of valid
// fields) are what the in-process decoding cannot see.
func TestAPIServerRejectsMistakes(t *testing.T) {
	k := apiServer(t)
	objs := rendered(t, "overlays/kind")
	ensureNamespaces(t, k, objs)
	byName := func(kind, name string) object {
		for _, o := range objs {
			if o.gvk.Kind == kind && o.name == name {
				return o
			}
		}
		t.Fatalf("no %s %s rendered", kind, name)
		return object{}
	}
	cases := []struct {
		name     string
		obj      object
		mutate   func(m map[string]any)
		wantCode int
		want     string
	}{
		{"unknown field", byName("Deployment", "sbtrain-coordinator"), func(m map[string]any) {
			container(m)["imagePullPolicyy"] = "Always"
		}, http.StatusBadRequest, `unknown field "spec.template.spec.containers[0].imagePullPolicyy"`},
		{"wrong type", byName("Deployment", "sbtrain-coordinator"), func(m map[string]any) {
			dig(m, "spec")["replicas"] = "one"
		}, http.StatusBadRequest, "replicas"},
		{"per-index backoff on a non-indexed Job", byName("Job", "sbtrain-trainers"), func(m map[string]any) {
			dig(m, "spec")["completionMode"] = "NonIndexed"
		}, http.StatusUnprocessableEntity, "backoffLimitPerIndex"},
		{"podFailurePolicy with restarts", byName("Job", "sbtrain-trainers"), func(m map[string]any) {
			dig(m, "spec", "template", "spec")["restartPolicy"] = "OnFailure"
		}, http.StatusUnprocessableEntity, "restartPolicy"},
		{"container port name too long", byName("Deployment", "sbtrain-coordinator"), func(m map[string]any) {
			container(m)["ports"].([]any)[0].(map[string]any)["name"] = "gossip-tcp-and-udp"
		}, http.StatusUnprocessableEntity, "must be no more than 15 characters"},
		{"env from a bad downward field", byName("Job", "sbtrain-trainers"), func(m map[string]any) {
			env := container(dig(m, "spec", "template"))["env"].([]any)
			env[0].(map[string]any)["valueFrom"] = map[string]any{"fieldRef": map[string]any{"fieldPath": "status.podAddress"}}
		}, http.StatusUnprocessableEntity, "field label not supported: status.podAddress"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var m map[string]any
			if err := json.Unmarshal(tc.obj.json, &m); err != nil {
				t.Fatal(err)
			}
			tc.mutate(m)
			body, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			r, err := k.create(tc.obj.gvk, tc.obj.namespace, body, true)
			if err != nil {
				t.Fatal(err)
			}
			if msg := r.message(); r.code != tc.wantCode || !strings.Contains(msg, tc.want) {
				if len(msg) > 400 {
					msg = msg[:400] + "..."
				}
				t.Errorf("got %d %q, want %d and a message about %q", r.code, msg, tc.wantCode, tc.want)
			}
		})
	}
}

// dig walks nested JSON objects.
func dig(m map[string]any, keys ...string) map[string]any {
	for _, k := range keys {
		m = m[k].(map[string]any)
	}
	return m
}

// container is the first container of a workload's pod template, or of a
// pod template given directly.
func container(m map[string]any) map[string]any {
	if _, ok := m["spec"].(map[string]any)["template"]; ok {
		m = dig(m, "spec", "template")
	}
	return dig(m, "spec")["containers"].([]any)[0].(map[string]any)
}
