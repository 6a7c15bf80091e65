package main

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/dirtarget"
)

func TestRetentionKeepsExactlyThePointsInsideTheWindowAndAlwaysTheNewest(t *testing.T) {
	now := time.Date(2026, 3, 9, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name      string
		retention time.Duration
		ages      []time.Duration // of the points, oldest first
		keep      int             // how many of the newest remain
	}{
		{"24 h keeps a day", 24 * time.Hour, []time.Duration{30 * time.Hour, 25 * time.Hour, 23 * time.Hour, time.Hour, 0}, 3},
		{"exactly at the edge stays", 2 * time.Hour, []time.Duration{3 * time.Hour, 2 * time.Hour, time.Hour}, 2},
		{"0 h keeps only the newest", 0, []time.Duration{2 * time.Hour, time.Hour, time.Minute}, 1},
		{"the newest stays even when old", time.Hour, []time.Duration{50 * time.Hour, 48 * time.Hour}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := dirtarget.Open(filepath.Join(t.TempDir(), "target"), "vm")
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			r.CreateDisk("d", 4096)
			var ids []string
			for i, age := range tc.ages {
				id := fmt.Sprintf("p%d", i)
				if _, err := r.CreatePoint(id, now.Add(-age), "crash"); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, id)
			}
			pruned, err := prune(r, now, tc.retention)
			if err != nil {
				t.Fatal(err)
			}
			points, _ := r.Points()
			if len(points) != tc.keep || len(pruned) != len(ids)-tc.keep || points[len(points)-1].ID != ids[len(ids)-1] {
				t.Fatalf("kept %d (%v), pruned %v; want the newest %d", len(points), points, pruned, tc.keep)
			}
		})
	}
}
