package agentproto

import "testing"

func TestFormatBytesReadsAsPeopleWriteSizes(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 B", 512: "512 B", 1024: "1.0 KiB", 138412032: "132 MiB", 2147483648: "2.0 GiB",
		1 << 40: "1.0 TiB", 5 * 1 << 20: "5.0 MiB", 999 << 30: "999 GiB",
	} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
