package k8s_test

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestChecksCatchMistakes breaks a copy of the manifests in one place at a
// time and runs the check that must catch it in a child test process: a
// check that cannot fail proves nothing.
func TestChecksCatchMistakes(t *testing.T) {
	if os.Getenv("SBTRAIN_K8S_TEST_DIR") != "" {
		t.Skip("already a child of TestChecksCatchMistakes")
	}
	bin := sbtrainBinary(t)
	cases := []struct {
		name      string
		file      string // relative to the directory holding k8s/
		old, new  string
		test      string
		wantInOut string
	}{
		{"unknown field", "k8s/base/coordinator.yaml", "imagePullPolicy: IfNotPresent", "imagePullPolicy: IfNotPresent\n        imagePullPolicyy: Always",
			"TestOverlaysRender", `unknown field "spec.template.spec.containers[0].imagePullPolicyy"`},
		{"wrong case", "k8s/base/trainers.yaml", "completionMode: Indexed", "completionmode: Indexed",
			"TestOverlaysRender", `unknown field "spec.completionmode"`},
		{"flag the binary lacks", "k8s/base/coordinator.yaml", "--checkpoint-every=100", "--checkpoint-evry=100",
			"TestCommandLines", "flag --checkpoint-evry: sbtrain coordinator has no such flag"},
		{"flag value of the wrong type", "k8s/base/trainers.yaml", "--coordinator-timeout=5m", "--coordinator-timeout=300",
			"TestCommandLines", "not a valid duration"},
		{"undefined variable", "k8s/base/trainers.yaml", "--host=$(POD_IP)", "--host=$(POD_ADDRESS)",
			"TestCommandLines", "uses $(POD_ADDRESS), which the container's environment does not define"},
		{"environment nobody reads", "k8s/base/trainers.yaml", "        - name: POD_IP\n", "        - name: SBTRAIN_DEBUG\n          value: \"1\"\n        - name: POD_IP\n",
			"TestEnvIsRead", "sets SBTRAIN_DEBUG, which sbtrain does not read"},
		{"selector matching nothing", "k8s/base/coordinator.yaml", "  selector:\n    app.kubernetes.io/name: sbtrain\n    app.kubernetes.io/component: coordinator\n",
			"  selector:\n    app.kubernetes.io/name: sbtrain\n    app.kubernetes.io/component: coordinatr\n",
			"TestServicesSelectPods", "matches no pod template"},
		{"service port the pod lacks", "k8s/base/trainers.yaml", "    port: 7948\n    targetPort: ring", "    port: 7948\n    targetPort: rings",
			"TestServicesSelectPods", "targets rings"},
		{"probe on an undeclared port", "k8s/base/coordinator.yaml", "            port: http\n          periodSeconds: 2\n", "            port: metrics\n          periodSeconds: 2\n",
			"TestProbesUseDeclaredPorts", "startup probe port metrics is not a declared TCP port"},
		{"liveness on the wrong port", "k8s/base/coordinator.yaml", "        livenessProbe:\n          httpGet:\n            path: /healthz\n            port: http",
			"        livenessProbe:\n          httpGet:\n            path: /healthz\n            port: grpc",
			"TestProbesUseDeclaredPorts", "sbtrain serves HTTP on --http"},
		{"join the wrong port", "k8s/base/trainers.yaml", "--join=sbtrain-coordinator.sbtrain.svc:7946", "--join=sbtrain-coordinator.sbtrain.svc:7947",
			"TestTrainersReachCoordinator", "the coordinator gossips on 7946"},
		{"join the wrong namespace", "k8s/base/trainers.yaml", "--join=sbtrain-coordinator.sbtrain.svc:7946", "--join=sbtrain-coordinator.default.svc:7946",
			"TestTrainersReachCoordinator", "no Service sbtrain-coordinator in namespace default"},
		{"trainer binds all interfaces", "k8s/base/trainers.yaml", "--host=$(POD_IP)", "--host=0.0.0.0",
			"TestTrainersAddressing", "want the pod IP"},
		{"no subdomain", "k8s/base/trainers.yaml", "      subdomain: sbtrain-trainers\n", "",
			"TestTrainersAddressing", "no subdomain"},
		{"worker count in two places", "k8s/overlays/kind/kustomization.yaml", "  - select:\n      kind: Job\n      name: sbtrain-trainers\n    fieldPaths:\n    - spec.completions\n", "",
			"TestWorkerCount", "want all equal"},
		{"invalid run config", "k8s/base/run.yaml", "lr: 0.001", "lr: -0.001",
			"TestRunConfigIsValid", "train.lr"},
		{"rolling coordinator", "k8s/base/coordinator.yaml", "    type: Recreate", "    type: RollingUpdate",
			"TestWorkloadShape", "want Recreate"},
		{"writable root", "k8s/overlays/kind/minio.yaml", "readOnlyRootFilesystem: true\n          capabilities:\n            drop: [\"ALL\"]\n        volumeMounts:\n        - name: data",
			"readOnlyRootFilesystem: false\n          capabilities:\n            drop: [\"ALL\"]\n        volumeMounts:\n        - name: data",
			"TestPodSecurity", "readOnlyRootFilesystem is not true"},
		{"S3 endpoint without a Service", "k8s/overlays/kind/kustomization.yaml", "http://minio.sbtrain.svc:9000", "http://minio.sbtrain.svc:9001",
			"TestStoreEndpoint", "has no TCP port 9001"},
		{"root image", "Dockerfile", "USER 65532:65532", "USER 0",
			"TestDockerfile", "is root"},
		{"binary moved", "Dockerfile", `ENTRYPOINT ["/usr/local/bin/sbtrain"]`, `ENTRYPOINT ["/usr/bin/sbtrain"]`,
			"TestDockerfile", "the image's binary is /usr/bin/sbtrain"},
		{"kind loads another image", "Makefile", "IMAGE   ?= sbtrain:dev", "IMAGE   ?= sbtrain:latest",
			"TestKindCluster", "kind-load build and load sbtrain:latest"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			copyTree(t, ".", filepath.Join(root, "k8s"))
			for _, f := range []string{"Dockerfile", "Makefile"} {
				copyFile(t, filepath.Join(repoRoot, f), filepath.Join(root, f))
			}
			p := filepath.Join(root, filepath.FromSlash(tc.file))
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(string(b), tc.old); n != 1 {
				t.Fatalf("%s contains %q %d times, want once: update this case", tc.file, tc.old, n)
			}
			if err := os.WriteFile(p, []byte(strings.Replace(string(b), tc.old, tc.new, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(os.Args[0], "-test.run", "^"+tc.test+"$", "-test.count=1", "-test.timeout=3m")
			cmd.Env = append(os.Environ(), "SBTRAIN_K8S_TEST_DIR="+filepath.Join(root, "k8s"), "SBTRAIN_K8S_TEST_BIN="+bin)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("%s passed with the mistake in %s:\n%s", tc.test, tc.file, out)
			}
			if !strings.Contains(string(out), tc.wantInOut) {
				t.Fatalf("%s failed, but not saying %q:\n%s", tc.test, tc.wantInOut, out)
			}
		})
	}
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(from, p)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		if strings.HasSuffix(p, ".go") {
			return nil
		}
		copyFile(t, p, filepath.Join(to, rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
