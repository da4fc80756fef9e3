package postgres

import (
	"context"
	"sort"

	"github.com/jackc/pgx/v5"

	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/store/internal/column"
	"github.com/totpgate/totpgate/store/internal/outcome"
)

// notAtTarget is the SQL condition "this row's secret is not yet at the
// target key": another backend, or a version below, or still under the
// bare binding (store.BindingBare). The backend test is a prefix
// comparison on the ciphertext ("vault:"), which the key_version column
// does not carry.
const notAtTarget = `NOT (left(ciphertext, length(@backend::text) + 1) = @backend::text || ':' AND key_version >= @version AND binding = 1)`

// SecretsPage lists up to limit stored secrets (pending and active) not yet
// at target, with user id > after in id order (byte order: the id column
// is COLLATE "C", and so are the comparison and the sort).
func (s *Store) SecretsPage(ctx context.Context, after string, target store.KeyRef, limit int) ([]store.SecretRef, error) {
	if err := outcome.PageLimit(limit); err != nil {
		return nil, driver.Err("secrets page", err)
	}
	// The query's error comes back from rows.Err (Reads, postgres.go).
	rows, _ := s.pool.Query(ctx, `
SELECT `+column.SecretRefColumns+` FROM users
WHERE id > @after AND `+notAtTarget+`
ORDER BY id
LIMIT @limit`, pgx.StrictNamedArgs{
		"after": after, "backend": target.Backend, "version": int64(target.Version), "limit": int64(limit),
	})
	defer rows.Close()
	out, err := column.Collect(rows, column.SecretRef)
	return outcome.Of(driver, "secrets page", out, err)
}

// SwapSecrets applies the swaps whose row still holds Old, in one UPDATE
// statement (so one transaction, one round trip) and returns how many
// swaps it applied.
//
// The result is the same as applying the swaps one after the other, as the
// SQLite store does, also when a batch names a user more than once: a
// user's swaps are folded here into one candidate per distinct Old (the
// first swap with that Old, then every later swap of the user that applies
// after it), and at most one candidate can match the row's ciphertext.
// The UPDATE checks ciphertext = Old on the newest row version, so a
// concurrent re-enrollment is never overwritten.
func (s *Store) SwapSecrets(ctx context.Context, swaps []store.Swap) (int, error) {
	cands := foldSwaps(swaps)
	if len(cands) == 0 {
		return 0, nil
	}
	ids := make([]string, len(cands))
	olds := make([]string, len(cands))
	news := make([]string, len(cands))
	versions := make([]int64, len(cands))
	counts := make([]int64, len(cands))
	bindings := make([]int64, len(cands))
	for i, c := range cands {
		ids[i], olds[i], news[i], versions[i], counts[i], bindings[i] = c.id, c.old, c.new, c.version, c.n, c.binding
	}
	var swapped int64
	err := s.pool.QueryRow(ctx, `
WITH swapped AS (
	UPDATE users AS u SET ciphertext = s.new, key_version = s.version, binding = s.binding
	FROM unnest(@ids::text[], @olds::text[], @news::text[], @versions::bigint[], @counts::bigint[], @bindings::bigint[])
		AS s(id, old, new, version, n, binding)
	WHERE u.id = s.id AND u.ciphertext = s.old
	RETURNING s.n
)
SELECT COALESCE(SUM(n), 0)::bigint FROM swapped`, pgx.StrictNamedArgs{
		"ids": ids, "olds": olds, "news": news, "versions": versions, "counts": counts, "bindings": bindings,
	}).Scan(&swapped)
	return outcome.Of(driver, "swap secrets", int(swapped), err)
}

// candidate is one UPDATE row of SwapSecrets: user id's ciphertext old
// becomes new (at key version, under binding), which stands for n swaps
// of the batch.
type candidate struct {
	id, old, new        string
	version, n, binding int64
}

// foldSwaps folds each user's swaps into one candidate per distinct Old:
// the first swap with that Old, then every later swap of the user that
// applies after it. Users come in id order (the UPDATE locks rows in
// that order), each user's candidates in the order of their first swap.
func foldSwaps(swaps []store.Swap) []candidate {
	byUser := map[string][]int{}
	var order []string
	for i, sw := range swaps {
		if _, ok := byUser[sw.UserID]; !ok {
			order = append(order, sw.UserID)
		}
		byUser[sw.UserID] = append(byUser[sw.UserID], i)
	}
	sort.Strings(order) // lock rows in id order
	var cands []candidate
	for _, id := range order {
		idx := byUser[id]
		seen := map[string]bool{}
		for p, i := range idx {
			if seen[swaps[i].Old] {
				continue // an earlier swap with this Old would apply first
			}
			seen[swaps[i].Old] = true
			c := candidate{id: id, old: swaps[i].Old, new: swaps[i].New, version: int64(swaps[i].Version), binding: int64(swaps[i].Binding), n: 1}
			for _, j := range idx[p+1:] {
				if swaps[j].Old == c.new {
					c.new, c.version, c.binding = swaps[j].New, int64(swaps[j].Version), int64(swaps[j].Binding)
					c.n++
				}
			}
			cands = append(cands, c)
		}
	}
	return cands
}

// CountByKey counts stored secrets (pending and active) per backend (the
// ciphertext up to its first ':') and key version.
func (s *Store) CountByKey(ctx context.Context) (map[store.KeyRef]int, error) {
	return s.countByKey(ctx, "count by key", "")
}

// CountBareBindings counts the stored secrets still under
// store.BindingBare per backend and key version.
func (s *Store) CountBareBindings(ctx context.Context) (map[store.KeyRef]int, error) {
	return s.countByKey(ctx, "count bare bindings", "WHERE binding = 0")
}

func (s *Store) countByKey(ctx context.Context, op, where string) (map[store.KeyRef]int, error) {
	// The query's error comes back from rows.Err (Reads, postgres.go).
	rows, _ := s.pool.Query(ctx, `
SELECT split_part(ciphertext, ':', 1), key_version, COUNT(*)
FROM users `+where+` GROUP BY 1, 2`)
	defer rows.Close()
	out, err := column.Counts(rows, column.KeyRef)
	return outcome.Of(driver, op, out, err)
}

// CountByState counts users per MFA state (pending and active; users
// without a row are not known to the store).
func (s *Store) CountByState(ctx context.Context) (map[store.State]int, error) {
	// The query's error comes back from rows.Err (Reads, postgres.go).
	rows, _ := s.pool.Query(ctx, `SELECT state, COUNT(*) FROM users GROUP BY state`)
	defer rows.Close()
	out, err := column.Counts(rows, column.State)
	return outcome.Of(driver, "count by state", out, err)
}
