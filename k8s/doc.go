// Package k8s holds the Kubernetes manifests of a distributed run (a
// kustomize base and the overlays kind and cluster) and the tests that
// check them: rendered in-process, decoded strictly into the Kubernetes API
// types and cross-checked against the sbtrain binary, and applied with a
// server-side dry run to a real kube-apiserver. It has no code of its own.
package k8s
