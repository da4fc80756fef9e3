package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/store/internal/column"
	"github.com/totpgate/totpgate/store/internal/usertx"
)

// Settling attempts: one durable write per login, shared by concurrent ones.
//
// SettleAttempt reads the user's counter, decides (store.Counter) and
// writes the outcome inside one BEGIN IMMEDIATE transaction, so an attempt
// costs one commit (one fsync under synchronous=FULL) instead of the two of
// counting it first and accepting the step afterwards.
//
// Group commit: attempts go to one committer goroutine, which runs every
// attempt waiting when it gets the write connection in one transaction,
// in arrival order (each sees the effect of the ones before it, so the
// limit holds exactly as if they ran one by one), and commits once. No
// caller hears its answer before that commit returned, so whatever a caller
// was told (a failure counted, a lock set, a step or code spent) is on
// disk: a crash can lose only attempts whose callers got no answer. When a
// statement or the commit fails, the whole batch rolls back and every
// attempt in it fails (closed): none of them took effect. Nothing waits to
// fill a batch: a lone login commits at once, and a batch is whatever
// queued behind the commit before it, so batching only ever shortens
// waits.

// maxBatch bounds how many attempts share one commit.
const maxBatch = 64

// errClosed: SettleAttempt after Close.
var errClosed = errors.New("sqlite: store closed")

type settleReq struct {
	ctx  context.Context
	id   string
	m    store.Match
	now  time.Time
	l    store.Limits
	res  store.Settled
	err  error
	done chan struct{}
}

// The statements of a settlement, prepared once on the write connection:
// parsing them anew for every login cost more CPU than running them.
const (
	sqlReadCounter = `SELECT ` + column.CounterColumns + ` FROM users WHERE id = ?`
	sqlSpendCode   = `UPDATE recovery_codes SET used_at = ? WHERE id = ? AND user_id = ? AND used_at IS NULL`
	// A recovery code leaves last_step as it is (max with 0).
	sqlAccept = `UPDATE users SET last_step = max(last_step, :step), failures = 0, failure_window_start = 0,
	last_used_at = :now, updated_at = :now
WHERE id = :id`
	sqlFail = `UPDATE users SET failures = ?, failure_window_start = ?, locked_until = ? WHERE id = ?`
)

type settleStmts struct {
	read, spend, accept, fail, revokeDevices *sql.Stmt
}

func prepareSettle(ctx context.Context, w *sql.DB) (*settleStmts, error) {
	var st settleStmts
	for _, p := range []struct {
		to  **sql.Stmt
		sql string
	}{
		{&st.read, sqlReadCounter}, {&st.spend, sqlSpendCode}, {&st.accept, sqlAccept}, {&st.fail, sqlFail},
		{&st.revokeDevices, sqlDeleteUserDevices},
	} {
		stmt, err := w.PrepareContext(ctx, p.sql)
		if err != nil {
			st.close()
			return nil, fmt.Errorf("sqlite: prepare: %w", err)
		}
		*p.to = stmt
	}
	return &st, nil
}

func (st *settleStmts) close() {
	for _, s := range []*sql.Stmt{st.read, st.spend, st.accept, st.fail, st.revokeDevices} {
		if s != nil {
			s.Close()
		}
	}
}

// committer is the group-commit loop; it runs from Open until Close.
type committer struct {
	w       *sql.DB
	stmts   *settleStmts
	queue   chan *settleReq
	quit    chan struct{}
	stopped chan struct{}
	once    sync.Once
	commits atomic.Int64 // batches committed (or tried), for the benchmark
}

func startCommitter(ctx context.Context, w *sql.DB) (*committer, error) {
	st, err := prepareSettle(ctx, w)
	if err != nil {
		return nil, err
	}
	c := &committer{w: w, stmts: st, queue: make(chan *settleReq, maxBatch), quit: make(chan struct{}), stopped: make(chan struct{})}
	go c.run()
	return c, nil
}

// stop ends the loop after the batch in progress and fails what is queued.
func (c *committer) stop() {
	c.once.Do(func() { close(c.quit) })
	<-c.stopped
	c.stmts.close()
}

func (c *committer) run() {
	defer close(c.stopped)
	batch := make([]*settleReq, 0, maxBatch)
	for {
		select {
		case <-c.quit:
			c.drain()
			return
		case r := <-c.queue:
			batch = append(batch[:0], r)
		}
	more:
		for len(batch) < maxBatch {
			select {
			case r := <-c.queue:
				batch = append(batch, r)
			default:
				break more
			}
		}
		c.commit(batch)
		clear(batch)
	}
}

// drain fails every queued attempt at Close.
func (c *committer) drain() {
	for {
		select {
		case r := <-c.queue:
			r.err = errClosed
			close(r.done)
		default:
			return
		}
	}
}

// commit settles batch in one transaction. The statements run under a
// context of the store's own, not of any caller: one caller giving up
// must not undo the others' attempts. A caller whose context ended before
// its turn is skipped and changes nothing; an unknown user is found
// before anything is written. Any other error ends the transaction.
func (c *committer) commit(batch []*settleReq) {
	c.commits.Add(1)
	ctx := context.Background()
	err := inTx(ctx, c.w, func(tx *sql.Tx) error {
		for _, r := range batch {
			if r.err = r.ctx.Err(); r.err != nil {
				continue
			}
			r.res, r.err = usertx.Settle(ctx, userTx{tx, c.stmts}, r.id, r.m, r.now, r.l)
			if r.err != nil && !errors.Is(r.err, store.ErrNotFound) {
				return r.err
			}
		}
		return nil
	})
	for _, r := range batch {
		if err != nil && r.err == nil {
			r.res, r.err = store.Settled{}, err // rolled back with the rest
		}
		r.err = driver.Err("settle attempt", r.err)
		close(r.done)
	}
}

// SettleAttempt counts, checks and settles one attempt in one transaction,
// shared with the attempts queued with it (see the top of this file). It
// returns once the commit holding it is durable.
func (s *Store) SettleAttempt(ctx context.Context, id string, m store.Match, now time.Time, l store.Limits) (store.Settled, error) {
	if err := ctx.Err(); err != nil {
		return store.Settled{}, fmt.Errorf("sqlite: settle attempt: %w", err)
	}
	r := &settleReq{ctx: ctx, id: id, m: m, now: now, l: l, done: make(chan struct{})}
	c := s.settle
	select {
	case c.queue <- r:
	case <-c.quit:
		return store.Settled{}, errClosed
	case <-ctx.Done():
		return store.Settled{}, fmt.Errorf("sqlite: settle attempt: %w", ctx.Err())
	}
	select {
	case <-r.done:
		return r.res, r.err
	case <-c.stopped:
		select {
		case <-r.done:
			return r.res, r.err
		default:
			return store.Settled{}, errClosed
		}
	case <-ctx.Done():
		// The attempt may still be settled; the caller fails closed.
		return store.Settled{}, fmt.Errorf("sqlite: settle attempt: %w", ctx.Err())
	}
}
