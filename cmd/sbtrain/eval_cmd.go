package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/sbtrain/sbtrain/experiment"
)

func init() {
	register(&command{name: "eval", summary: "evaluate a trained run directory against held-out data and closed forms", run: runEval})
}

func runEval(ctx context.Context, args []string) error {
	fs := newFlagSet("eval", "--run DIR [--json]")
	dir := fs.String("run", "", "run directory written by 'sbtrain train' (required)")
	asJSON := fs.Bool("json", false, "print the figures as JSON")
	if done, err := parseFlags(fs, args); done {
		return err
	}
	if *dir == "" {
		return usagef("--run is required")
	}
	setup, model, err := experiment.Load(*dir)
	if err != nil {
		return usageError{err}
	}
	ev, err := setup.NewEvaluatorContext(ctx)
	if err != nil {
		return err
	}
	f, _, err := ev.Evaluate(ctx, model)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(f)
	}
	fmt.Printf("%s (%s): %s\n", setup.Config.Name, setup.Config.Method, figuresLine(f))
	return nil
}
