//! The data references of arm64 code, as the Go linker writes them: `ADRP` takes a 4 KiB page
//! into a register, then an `ADD` (an address taken), an `LDR`/`STR` with an unsigned offset, or
//! an `LDAR`/`STLR` (atomics) through the address in it. Fixed 4-byte instructions, so no
//! decoder library is needed; a page is trusted for the few instructions after its `ADRP` only,
//! since other instructions that overwrite the register are not decoded.
use super::locate::Ref;

/// Instructions after an `ADRP` (or the `ADD` after it) its address is used within.
const LIVE: usize = 4;

/// (mask, bits, bytes, store) of loads and stores with an unsigned, scaled 12-bit offset.
const SCALED: [(u32, u32, usize, bool); 6] = [
    (0xffc0_0000, 0xf940_0000, 8, false), // LDR Xt
    (0xffc0_0000, 0xb940_0000, 4, false), // LDR Wt
    (0xffc0_0000, 0x3940_0000, 1, false), // LDRB
    (0xffc0_0000, 0xf900_0000, 8, true),  // STR Xt
    (0xffc0_0000, 0xb900_0000, 4, true),  // STR Wt
    (0xffc0_0000, 0x3900_0000, 1, true),  // STRB
];
/// (bits, bytes, store) of acquire loads and release stores, `[Xn]` only.
const ORDERED: [(u32, usize, bool); 6] = [
    (0xc8df_fc00, 8, false), // LDAR Xt
    (0x88df_fc00, 4, false), // LDAR Wt
    (0x08df_fc00, 1, false), // LDARB
    (0xc89f_fc00, 8, true),  // STLR Xt
    (0x889f_fc00, 4, true),  // STLR Wt
    (0x089f_fc00, 1, true),  // STLRB
];

pub fn references(code: &[u8], ip: u64) -> Vec<Ref> {
    let mut out = Vec::new();
    // Per register: the address it holds and the instruction that put it there.
    let mut held: [Option<(u64, usize)>; 32] = [None; 32];
    for (index, word) in code.chunks_exact(4).enumerate() {
        let insn = u32::from_le_bytes(word.try_into().unwrap());
        let pc = ip + 4 * index as u64;
        let (rd, rn) = ((insn & 31) as usize, ((insn >> 5) & 31) as usize);
        let base = held[rn]
            .filter(|&(_, at)| index - at <= LIVE)
            .map(|(a, _)| a);
        if insn & 0x9f00_0000 == 0x9000_0000 {
            // ADRP: immhi (bits 5–23) and immlo (29–30), a signed count of pages.
            let imm = (((insn >> 5) & 0x7_ffff) << 2 | (insn >> 29) & 3) as i64;
            let pages = (imm << 43) >> 43;
            held[rd] = Some(((pc & !0xfff).wrapping_add((pages << 12) as u64), index));
        } else if insn & 0xff80_0000 == 0x9100_0000 {
            // ADD Xd, Xn, #imm12 (shifted by 12 when bit 22 is set).
            let Some(base) = base else { continue };
            let imm = u64::from((insn >> 10) & 0xfff) << (12 * ((insn >> 22) & 1));
            let target = base.wrapping_add(imm);
            out.push(Ref {
                target,
                size: 0,
                store: false,
                index,
            });
            held[rd] = Some((target, index));
        } else if let Some(&(_, _, size, store)) =
            SCALED.iter().find(|(mask, bits, ..)| insn & mask == *bits)
        {
            let Some(base) = base else { continue };
            let offset = u64::from((insn >> 10) & 0xfff) * size as u64;
            out.push(Ref {
                target: base.wrapping_add(offset),
                size,
                store,
                index,
            });
        } else if let Some(&(_, size, store)) = ORDERED
            .iter()
            .find(|(bits, ..)| insn & 0xffff_fc00 == *bits)
        {
            let Some(target) = base else { continue };
            out.push(Ref {
                target,
                size,
                store,
                index,
            });
        }
    }
    out
}
