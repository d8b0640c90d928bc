package par

import "context"

// Ahead hands out the generations 0..last of something built per
// generation (a phase's cache), and when background is set builds g+1 on
// its own goroutine while the caller uses g. That is only sound when a
// generation's bytes do not depend on when it is built, which holds for a
// cache simulated with a network frozen for the whole phase.
//
// The BLAS is held at one thread from NewAhead to Stop (SingleThreadBLAS),
// whether or not it builds ahead: OpenBLAS's products can change bits with
// its thread count, and the caller's own products must depend neither on
// when the background build runs nor on how many workers it has.
type Ahead[T any] struct {
	ctx        context.Context
	cancel     context.CancelFunc
	build      func(ctx context.Context, gen uint64) (T, error)
	last       uint64
	background bool
	next       *pending[T]
	release    func()
}

// pending is a generation being built; done closes when it is.
type pending[T any] struct {
	gen  uint64
	done chan struct{}
	val  T
	err  error
}

// NewAhead returns an Ahead over build for generations 0..last. Call Stop
// when done with it.
func NewAhead[T any](ctx context.Context, build func(ctx context.Context, gen uint64) (T, error), last uint64, background bool) *Ahead[T] {
	a := &Ahead[T]{build: build, last: last, background: background && last > 0, release: SingleThreadBLAS()}
	a.ctx, a.cancel = context.WithCancel(ctx)
	return a
}

// Get returns generation g, waiting for it if it is being built, and
// starts building g+1 when there is one.
func (a *Ahead[T]) Get(g uint64) (T, error) {
	var val T
	var err error
	if n := a.next; n != nil && n.gen == g {
		<-n.done
		a.next = nil
		val, err = n.val, n.err
	} else {
		a.wait()
		val, err = a.build(a.ctx, g)
	}
	if err != nil {
		var zero T
		return zero, err
	}
	if a.background && g < a.last {
		n := &pending[T]{gen: g + 1, done: make(chan struct{})}
		a.next = n
		go func() {
			defer close(n.done)
			n.val, n.err = a.build(a.ctx, n.gen)
		}()
	}
	return val, nil
}

// wait drops a generation being built, once it has stopped.
func (a *Ahead[T]) wait() {
	if a.next != nil {
		<-a.next.done
		a.next = nil
	}
}

// Stop ends the background build, waits for it and restores the BLAS.
func (a *Ahead[T]) Stop() {
	a.cancel()
	a.wait()
	a.release()
}
