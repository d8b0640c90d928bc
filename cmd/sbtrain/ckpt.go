package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/sbtrain/sbtrain/storage"
)

func init() {
	register(&command{
		name:    "ckpt",
		summary: "list, verify or garbage-collect a run's checkpoints (ls|verify|gc|unlock)",
		run:     runCkpt,
	})
}

// storeFlags are the flags that say where a store is and how to reach it;
// any command that opens a store can add them.
type storeFlags struct {
	url          string
	endpoint     string
	region       string
	tls          string
	pathStyle    bool
	accessKey    string
	secretKey    string
	createBucket bool
	// mustExist: the command only reads what is there, so a file store
	// that does not exist is a mistyped path, not one to create.
	mustExist bool
}

func addStoreFlags(fs *flag.FlagSet) *storeFlags {
	f := &storeFlags{}
	fs.StringVar(&f.url, "store", "", "store URL: s3://bucket/prefix or file:///dir (required)")
	fs.StringVar(&f.endpoint, "s3-endpoint", "", "S3 endpoint host:port or http(s)://host:port (default $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, s3.amazonaws.com)")
	fs.StringVar(&f.region, "s3-region", "", "S3 region (default $AWS_REGION, $AWS_DEFAULT_REGION, us-east-1)")
	fs.StringVar(&f.tls, "s3-tls", "", "use TLS: true or false (default: from the endpoint's scheme, else true)")
	fs.BoolVar(&f.pathStyle, "s3-path-style", false, "path-style bucket addressing (MinIO and most self-hosted servers)")
	fs.StringVar(&f.accessKey, "s3-access-key", "", "S3 access key (default $AWS_ACCESS_KEY_ID)")
	fs.StringVar(&f.secretKey, "s3-secret-key", "", "S3 secret key (default $AWS_SECRET_ACCESS_KEY; prefer the variable, flags show in ps)")
	fs.BoolVar(&f.createBucket, "create-bucket", false, "create the S3 bucket if it does not exist")
	return f
}

func (f *storeFlags) open(ctx context.Context) (storage.Store, error) {
	if f.url == "" {
		return nil, usagef("--store is required (s3://bucket/prefix or file:///dir)")
	}
	var err error
	if f.url, err = absStoreURL(f.url); err != nil {
		return nil, err
	}
	opts := storage.Options{
		Endpoint: f.endpoint, Region: f.region, PathStyle: f.pathStyle,
		AccessKey: f.accessKey, SecretKey: f.secretKey, CreateBucket: f.createBucket,
		MustExist: f.mustExist,
	}
	if f.tls != "" {
		b, err := strconv.ParseBool(f.tls)
		if err != nil {
			return nil, usagef("--s3-tls %q: want true or false", f.tls)
		}
		opts.TLS = &b
	}
	s, err := storage.Open(ctx, f.url, opts)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// childFlags repeat the non-secret store flags for a child process.
func (f *storeFlags) childFlags() []string {
	var out []string
	add := func(name, v string) {
		if v != "" {
			out = append(out, "--"+name, v)
		}
	}
	add("s3-endpoint", f.endpoint)
	add("s3-region", f.region)
	add("s3-tls", f.tls)
	if f.pathStyle {
		out = append(out, "--s3-path-style")
	}
	if f.createBucket {
		out = append(out, "--create-bucket")
	}
	return out
}

// childEnv passes credentials given as flags to a child through its
// environment, where ps does not show them.
func (f *storeFlags) childEnv() []string {
	var env []string
	if f.accessKey != "" {
		env = append(env, "AWS_ACCESS_KEY_ID="+f.accessKey)
	}
	if f.secretKey != "" {
		env = append(env, "AWS_SECRET_ACCESS_KEY="+f.secretKey)
	}
	return env
}

const ckptUsage = "ls|verify|gc|unlock --store URL --run ID [--force] [flags]"

func runCkpt(ctx context.Context, args []string) error {
	fs := newFlagSet("ckpt", ckptUsage)
	sf := addStoreFlags(fs)
	sf.mustExist = true
	run := fs.String("run", "", "run id (required)")
	force := fs.Bool("force", false, "unlock: remove the lease even if its holder looks alive (two coordinators would then run the run)")
	keep := fs.Int("keep", 3, "gc: keep the newest N committed checkpoints (phase ends and the newest valid one are always kept)")
	seq := fs.Int64("seq", 0, "verify: only the checkpoint with this sequence number (default: all)")
	if len(args) == 0 {
		fs.Usage()
		return usagef("missing action: want one of ls, verify, gc, unlock")
	}
	action, rest := args[0], args[1:]
	if action == "-h" || action == "--help" || action == "help" {
		fs.Usage()
		return nil
	}
	if done, err := parseFlags(fs, rest); done {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments %q", fs.Args())
	}
	switch action {
	case "ls", "verify", "gc", "unlock":
	default:
		return usagef("unknown action %q: want one of ls, verify, gc, unlock", action)
	}
	if *run == "" {
		return usagef("--run is required")
	}
	if err := storage.ValidateRunID(*run); err != nil {
		return usagef("--run: %v", err)
	}
	if *keep < 1 {
		return usagef("--keep %d: want at least 1", *keep)
	}
	s, err := sf.open(ctx)
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			return err
		}
		if errors.Is(err, storage.ErrBadURL) || errors.Is(err, storage.ErrNotFound) {
			return usagef("--store: %v", err)
		}
		return fmt.Errorf("open store: %w", err)
	}
	c, err := storage.NewCheckpoints(s, *run, nil)
	if err != nil {
		return usagef("%v", err)
	}
	out := os.Stdout
	switch action {
	case "ls":
		return ckptList(ctx, out, c)
	case "verify":
		return ckptVerify(ctx, out, c, *seq)
	case "gc":
		res, err := c.GC(ctx, *keep)
		for _, id := range res.Removed {
			fmt.Fprintf(out, "removed %s\n", id)
		}
		for _, id := range res.Kept {
			fmt.Fprintf(out, "kept    %s\n", id)
		}
		return err
	case "unlock":
		info, err := storage.ReadLease(ctx, s, *run)
		if errors.Is(err, storage.ErrNotFound) {
			fmt.Fprintf(out, "run %s has no lease\n", *run)
			return nil
		}
		if err != nil {
			return err
		}
		if live, why := storage.LeaseLive(*run, info, time.Now(), nil); live && !*force {
			return fmt.Errorf("%s: refusing to unlock a live lease (stop that coordinator first, or pass --force if it is dead)", why)
		}
		if err := storage.BreakLease(ctx, s, *run); err != nil {
			return err
		}
		fmt.Fprintf(out, "removed the lease of run %s held by %q since %s\n", *run, info.Holder, info.Acquired)
	}
	return nil
}

func ckptList(ctx context.Context, out io.Writer, c *storage.Checkpoints) error {
	ents, err := c.List(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tPHASE\tIPF\tDIRECTION\tSTEP\tPHASE-END\tBYTES\tCREATED\tSTATUS")
	for _, e := range ents {
		status := "committed"
		if e.Latest {
			status += ", LATEST"
		}
		if e.Manifest == nil {
			fmt.Fprintf(tw, "%d\t%d\t-\t-\t%d\t-\t%d\t-\t%v\n", e.ID.Seq, e.ID.Phase, e.ID.Step, e.Bytes, e.Err)
			continue
		}
		m := e.Manifest
		fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%d\t%v\t%d\t%s\t%s\n", m.Seq, m.Phase, m.IPFIteration, m.Direction, m.Step, m.PhaseEnd, e.Bytes, m.Created, status)
	}
	if len(ents) == 0 {
		fmt.Fprintln(tw, "(no checkpoints)")
	}
	return tw.Flush()
}

func ckptVerify(ctx context.Context, out io.Writer, c *storage.Checkpoints, only int64) error {
	ents, err := c.List(ctx)
	if err != nil {
		return err
	}
	bad, n := 0, 0
	for _, e := range ents {
		if only != 0 && e.ID.Seq != only {
			continue
		}
		if e.Manifest == nil && errors.Is(e.Err, storage.ErrNotFound) {
			// Blobs without a manifest: a write a crash abandoned, or one
			// in progress. Neither was ever a checkpoint, so neither is a
			// bad one; ckpt gc removes the abandoned ones.
			fmt.Fprintf(out, "--  %s: uncommitted write (no manifest), not a checkpoint\n", e.ID)
			if only != 0 {
				return fmt.Errorf("checkpoint seq %d was never committed", only)
			}
			continue
		}
		n++
		if _, err := c.Verify(ctx, e.ID); err != nil {
			bad++
			fmt.Fprintf(out, "BAD %s: %v\n", e.ID, err)
			continue
		}
		fmt.Fprintf(out, "ok  %s\n", e.ID)
	}
	switch {
	case only != 0 && n == 0:
		return fmt.Errorf("run has no checkpoint with seq %d", only)
	case bad > 0:
		return fmt.Errorf("%d of %d checkpoints do not verify", bad, n)
	}
	return nil
}
