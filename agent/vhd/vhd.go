// Package vhd writes and reads the footer of a fixed VHD: the disk's bytes,
// then one 512-byte footer. Azure page blobs that hold replicas use this
// layout so that Azure can turn them into managed disks as they are, and
// `qemu-img info -f vpc` reads them.
//
// Azure's rules: the virtual size is a whole number of MiB, the blob is that
// size plus the 512-byte footer, and the footer's "current size" equals the
// data size. The format is Microsoft's "Virtual Hard Disk Image Format
// Specification" (fixed disks).
package vhd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// FooterSize is the size of the footer at the end of a fixed VHD.
const FooterSize = 512

// Alignment is what Azure wants the data size to be a multiple of.
const Alignment = 1 << 20

// vhdEpoch is the VHD time origin: 2000-01-01 00:00:00 UTC.
var vhdEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// MaxDataSize is the largest fixed VHD Azure accepts as a managed disk
// (a little under 32 TiB, for the footer).
const MaxDataSize = 32*(1<<40) - Alignment

// DataSize is the replica's data size for a source disk of size bytes:
// rounded up to a whole MiB.
func DataSize(size int64) int64 {
	return (size + Alignment - 1) / Alignment * Alignment
}

// Footer is the fields of a fixed VHD footer that Lifeboat sets or reads.
type Footer struct {
	DataSize int64
	UniqueID [16]byte
	Created  time.Time
}

// Marshal encodes the footer.
func (f Footer) Marshal() ([]byte, error) {
	if f.DataSize <= 0 || f.DataSize%512 != 0 {
		return nil, fmt.Errorf("VHD data size %d is not a positive multiple of 512", f.DataSize)
	}
	b := make([]byte, FooterSize)
	copy(b[0:8], "conectix")
	binary.BigEndian.PutUint32(b[8:12], 2)           // features: reserved bit set
	binary.BigEndian.PutUint32(b[12:16], 0x00010000) // format version 1.0
	binary.BigEndian.PutUint64(b[16:24], ^uint64(0)) // data offset: none (fixed disk)
	binary.BigEndian.PutUint32(b[24:28], uint32(f.Created.Sub(vhdEpoch)/time.Second))
	// Creator "win " (Hyper-V): readers such as qemu then take the size from
	// the footer, not from the CHS geometry, which cannot express every
	// whole-MiB size and would cut the disk short.
	copy(b[28:32], "win ")
	binary.BigEndian.PutUint32(b[32:36], 0x00010000)         // creator version
	copy(b[36:40], "Wi2k")                                   // creator host OS, as Azure's own tools write
	binary.BigEndian.PutUint64(b[40:48], uint64(f.DataSize)) // original size
	binary.BigEndian.PutUint64(b[48:56], uint64(f.DataSize)) // current size
	c, h, s := geometry(f.DataSize / 512)
	binary.BigEndian.PutUint16(b[56:58], c)
	b[58], b[59] = h, s
	binary.BigEndian.PutUint32(b[60:64], 2) // disk type: fixed
	copy(b[68:84], f.UniqueID[:])
	binary.BigEndian.PutUint32(b[64:68], checksum(b))
	return b, nil
}

// Parse decodes and checks a fixed VHD footer.
func Parse(b []byte) (Footer, error) {
	var f Footer
	if len(b) != FooterSize {
		return f, fmt.Errorf("a VHD footer is %d bytes, got %d", FooterSize, len(b))
	}
	if !bytes.Equal(b[0:8], []byte("conectix")) {
		return f, errors.New("no VHD footer: the cookie is not \"conectix\"")
	}
	if got, want := binary.BigEndian.Uint32(b[64:68]), checksum(b); got != want {
		return f, fmt.Errorf("VHD footer checksum %08x does not match its content (%08x)", got, want)
	}
	if t := binary.BigEndian.Uint32(b[60:64]); t != 2 {
		return f, fmt.Errorf("VHD disk type %d is not a fixed disk (2)", t)
	}
	f.DataSize = int64(binary.BigEndian.Uint64(b[48:56]))
	f.Created = vhdEpoch.Add(time.Duration(binary.BigEndian.Uint32(b[24:28])) * time.Second)
	copy(f.UniqueID[:], b[68:84])
	return f, nil
}

// checksum is the one's complement of the byte sum, with the checksum field
// counted as zero.
func checksum(b []byte) uint32 {
	var sum uint32
	for i, c := range b {
		if i >= 64 && i < 68 {
			continue
		}
		sum += uint32(c)
	}
	return ^sum
}

// geometry is the CHS geometry the VHD specification derives from the
// number of sectors (its appendix algorithm).
func geometry(sectors int64) (cylinders uint16, heads, sectorsPerTrack uint8) {
	const max = 65535 * 16 * 255
	if sectors > max {
		sectors = max
	}
	var spt, hds, cth int64
	if sectors >= 65535*16*63 {
		spt, hds = 255, 16
		cth = sectors / spt
	} else {
		spt = 17
		cth = sectors / spt
		hds = (cth + 1023) / 1024
		if hds < 4 {
			hds = 4
		}
		if cth >= hds*1024 || hds > 16 {
			spt, hds = 31, 16
			cth = sectors / spt
		}
		if cth >= hds*1024 {
			spt, hds = 63, 16
			cth = sectors / spt
		}
	}
	return uint16(cth / hds), uint8(hds), uint8(spt)
}
