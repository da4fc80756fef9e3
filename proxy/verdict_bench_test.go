package proxy

import (
	"bytes"
	"fmt"
	"net/http"
	"testing"
)

// BenchmarkJudgeLargeAnswer judges a ~900 KiB JSON login answer that names
// a user without MFA: the streaming scan is the whole cost.
func BenchmarkJudgeLargeAnswer(b *testing.B) {
	var body bytes.Buffer
	body.WriteString(`{"user":{"id":"bob"},"items":[`)
	for i := 0; body.Len() < 900<<10; i++ {
		if i > 0 {
			body.WriteByte(',')
		}
		fmt.Fprintf(&body, `{"n":%d,"label":"item %d"}`, i, i)
	}
	body.WriteString(`]}`)
	p := &policy{userIDPointer: "/user/id", refused: RefusalSignal{MinStatus: 400}}
	a := &answer{Status: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: body.Bytes()}
	users := func(string) (bool, error) { return false, nil }
	b.SetBytes(int64(body.Len()))
	b.ReportAllocs()
	for b.Loop() {
		if v := p.Judge(loginRequest{}, a, Lookups{Enrolled: users}); v.Action != Release {
			b.Fatal(v)
		}
	}
}
