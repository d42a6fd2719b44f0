//! Reads struct member offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! The kernel programs have no CO-RE relocations, so userspace looks up the few offsets they
//! need and hands them over as `.rodata` constants. This is a deliberately small reader of the
//! BTF type section: it indexes types by id and resolves members by name, descending into
//! anonymous struct/union members (where `mm_struct` keeps nearly all of its fields).
use anyhow::{bail, Context, Result};

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
pub const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
pub const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Clone, Copy)]
struct Type {
    name_off: u32,
    kind: u32,
    vlen: u32,
    kind_flag: bool,
    /// `size` for sized kinds, the referenced type id otherwise.
    size_or_type: u32,
    /// Byte offset of the kind-specific data that follows the common header.
    extra: usize,
}

pub struct Btf {
    data: Vec<u8>,
    strings: usize,
    strings_len: usize,
    /// Where each type's header starts in `data`, indexed by type id (id 0, `void`, has
    /// none); headers are decoded when asked for, so the index costs 4 bytes a type.
    types: Vec<u32>,
}

/// Deepest chain of qualifiers, nested arrays or anonymous members followed.
const MAX_DEPTH: usize = 64;

/// The header `types` holds for `void`.
const VOID: u32 = u32::MAX;

/// A struct member: where it starts and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub offset: u64,
    pub type_id: u32,
}

/// The type header at `pos` (the caller has checked its 12 bytes are there).
fn decode(data: &[u8], pos: usize) -> Type {
    let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().expect("4 bytes"));
    let info = u32_at(pos + 4);
    Type {
        name_off: u32_at(pos),
        kind: (info >> 24) & 0x1f,
        vlen: info & 0xffff,
        kind_flag: info >> 31 == 1,
        size_or_type: u32_at(pos + 8),
        extra: pos + 12,
    }
}

impl Btf {
    pub fn from_sys_fs() -> Result<Self> {
        let path = "/sys/kernel/btf/vmlinux";
        Self::parse(std::fs::read(path).with_context(|| format!("reading {path}"))?)
    }

    pub fn parse(data: Vec<u8>) -> Result<Self> {
        let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        if u16_at(0) != Some(MAGIC) {
            bail!("not little-endian BTF data");
        }
        let u32_at = |o: usize| -> Result<u32> {
            let b = data.get(o..o + 4).context("truncated BTF")?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let hdr_len = u32_at(4)? as usize;
        let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
        let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
        let (start, end) = (hdr_len + type_off, hdr_len + type_off + type_len);
        let mut types = vec![VOID];
        let mut pos = start;
        while pos < end {
            u32_at(pos + 8)?;
            let t = decode(&data, pos);
            let vlen = t.vlen as usize;
            let extra_len = match t.kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                _ => 0,
            };
            types.push(
                u32::try_from(pos)
                    .ok()
                    .filter(|&p| p != VOID)
                    .context("BTF larger than 4 GiB")?,
            );
            pos = t.extra + extra_len;
        }
        if pos != end || data.len() < end {
            bail!("BTF type section is malformed");
        }
        if data.len() < hdr_len + str_off + str_len {
            bail!("BTF string section is malformed");
        }
        Ok(Self {
            strings: hdr_len + str_off,
            strings_len: str_len,
            data,
            types,
        })
    }

    fn u32_at(&self, off: usize) -> u32 {
        u32::from_le_bytes(self.data[off..off + 4].try_into().expect("4 bytes"))
    }

    fn name(&self, name_off: u32) -> &[u8] {
        let end = self.strings + self.strings_len;
        let start = (self.strings + name_off as usize).min(end);
        let region = &self.data[start..end];
        &region[..region.iter().position(|&b| b == 0).unwrap_or(region.len())]
    }

    fn get(&self, id: u32) -> Result<Type> {
        match self.types.get(id as usize) {
            Some(&VOID) => Ok(decode(&[0; 12], 0)),
            Some(&pos) => Ok(decode(&self.data, pos as usize)),
            None => bail!("BTF type id {id} out of range"),
        }
    }

    /// The id of the type of `kind` called `name`.
    fn id_of(&self, kind: u32, name: &str) -> Option<u32> {
        (1..self.types.len() as u32).find(|&id| {
            self.get(id)
                .is_ok_and(|t| t.kind == kind && self.name(t.name_off) == name.as_bytes())
        })
    }

    /// The id of the struct called `name`.
    pub fn struct_id(&self, name: &str) -> Result<u32> {
        self.id_of(KIND_STRUCT, name)
            .with_context(|| format!("struct {name} not in the kernel's BTF"))
    }

    /// The id of the typedef called `name` (a tracepoint's `btf_trace_<name>`, which a
    /// tp_btf program names as its target).
    pub fn typedef_id(&self, name: &str) -> Result<u32> {
        self.id_of(KIND_TYPEDEF, name)
            .with_context(|| format!("typedef {name} not in the kernel's BTF"))
    }

    /// The id of the function called `name` (an iterator's `bpf_iter_<kind>`, which an
    /// iterator program names as its target).
    pub fn func_id(&self, name: &str) -> Result<u32> {
        self.id_of(KIND_FUNC, name)
            .with_context(|| format!("function {name} not in the kernel's BTF"))
    }

    /// The value of `variant` in the enum called `name`.
    pub fn enum_value(&self, name: &str, variant: &str) -> Result<u64> {
        let t = self.get(
            self.id_of(KIND_ENUM, name)
                .with_context(|| format!("enum {name} not in the kernel's BTF"))?,
        )?;
        (0..t.vlen as usize)
            .map(|i| t.extra + 8 * i)
            .find(|&e| self.name(self.u32_at(e)) == variant.as_bytes())
            .map(|e| u64::from(self.u32_at(e + 4)))
            .with_context(|| format!("{variant} not in enum {name}"))
    }

    /// Follows typedefs and qualifiers to the underlying type.
    pub fn resolve(&self, mut id: u32) -> Result<u32> {
        // Bounded: a chain of qualifiers is a few long; a cycle would be a broken BTF.
        for _ in 0..MAX_DEPTH {
            let t = self.get(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => return Ok(id),
            }
        }
        bail!("BTF type {id}: qualifiers nest deeper than {MAX_DEPTH}")
    }

    /// Byte size of a (resolved) type.
    pub fn size_of(&self, id: u32) -> Result<u64> {
        self.size_at(id, 0)
    }

    fn size_at(&self, id: u32, depth: usize) -> Result<u64> {
        if depth > MAX_DEPTH {
            bail!("BTF type {id}: arrays nest deeper than {MAX_DEPTH}");
        }
        let id = self.resolve(id)?;
        let t = self.get(id)?;
        Ok(match t.kind {
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 => t.size_or_type as u64,
            KIND_PTR => 8,
            KIND_ARRAY => {
                let (elem, n) = self.array(id)?;
                self.size_at(elem, depth + 1)?.saturating_mul(n as u64)
            }
            kind => bail!("BTF type {id} (kind {kind}) has no size"),
        })
    }

    /// Element type and length of an array type.
    pub fn array(&self, id: u32) -> Result<(u32, u32)> {
        let t = self.get(self.resolve(id)?)?;
        if t.kind != KIND_ARRAY {
            bail!("BTF type {id} is not an array");
        }
        Ok((self.u32_at(t.extra), self.u32_at(t.extra + 8)))
    }

    pub fn is_array(&self, id: u32) -> Result<bool> {
        Ok(self.get(self.resolve(id)?)?.kind == KIND_ARRAY)
    }

    /// Finds member `name` of struct/union `id`, looking inside anonymous members too.
    pub fn member(&self, id: u32, name: &str) -> Result<Member> {
        self.find_member(id, name.as_bytes(), 0)?
            .with_context(|| format!("member {name} not found in BTF type {id}"))
    }

    fn find_member(&self, id: u32, name: &[u8], depth: usize) -> Result<Option<Member>> {
        if depth > MAX_DEPTH {
            bail!("BTF type {id}: anonymous members nest deeper than {MAX_DEPTH}");
        }
        let t = self.get(self.resolve(id)?)?;
        if t.kind != KIND_STRUCT && t.kind != KIND_UNION {
            return Ok(None);
        }
        for i in 0..t.vlen as usize {
            let m = t.extra + 12 * i;
            let (name_off, type_id, raw_off) =
                (self.u32_at(m), self.u32_at(m + 4), self.u32_at(m + 8));
            // With kind_flag set, the high 8 bits hold a bitfield size.
            let bits = if t.kind_flag {
                raw_off & 0xff_ffff
            } else {
                raw_off
            } as u64;
            let offset = bits / 8;
            if name_off == 0 {
                if let Some(inner) = self.find_member(type_id, name, depth + 1)? {
                    return Ok(Some(Member {
                        offset: offset + inner.offset,
                        ..inner
                    }));
                }
            } else if self.name(name_off) == name {
                return Ok(Some(Member { offset, type_id }));
            }
        }
        Ok(None)
    }

    /// Offset of `a.b.c` inside struct `root`.
    pub fn offset_of(&self, root: &str, path: &str) -> Result<u64> {
        let mut id = self.struct_id(root)?;
        let mut offset = 0;
        for name in path.split('.') {
            let m = self
                .member(id, name)
                .with_context(|| format!("{root}.{path}"))?;
            offset += m.offset;
            id = m.type_id;
        }
        Ok(offset)
    }
}
