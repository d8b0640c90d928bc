package clustertest

import (
	"testing"
	"time"
)

func TestSmoke(t *testing.T) {
	c := Start(t, Options{Trainers: 3})
	if err := c.Wait(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	c.CheckReplicas(t)
	c.CheckCommitted(t)
	f := c.Final(t)
	t.Logf("final %s, %d generations, %d steps", f.Checkpoint, c.Generations(), c.Progress())
}
