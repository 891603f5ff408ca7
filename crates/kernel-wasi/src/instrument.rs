//! Rewrites a preview1 module so every path-taking WASI call also reports its result to the host, every
//! `poll_oneoff` first asks the host whether it may sleep that long, and every `path_open` first asks the host
//! whether the path may be opened at all (a FIFO, socket or device in a mount may not: [`crate::special_files`]).
//!
//! For each imported function such as `wasi_snapshot_preview1::path_open`, a small wrapper function is appended to
//! the module: it calls the real import with the same arguments, then calls
//! `wasmagent:fs-audit::path_open(errno, arguments...)`, then returns the errno. Every reference to the import
//! (calls, `ref.func`, element segments, exports) is redirected to the wrapper. Nothing else changes; the names
//! section keeps its names. Mounts do not depend on this rewrite (wasmtime-wasi enforces them): it makes refusals
//! observable, because an audit function called from guest code can read guest memory to name the path. The two
//! checks made before a call (sleeps, special files) do depend on it, so every preview1 module is run rewritten.
//!
//! A module that imports `wasmagent:fs-audit` itself is refused, so guest code cannot forge audit records.

use crate::fs_audit::AUDIT_MODULE;
use wasm_encoder::reencode::Reencode;
use wasm_encoder::{CodeSection, Function, FunctionSection, ImportSection, Instruction, TypeSection, ValType};
use wasmparser::{Parser, Payload, TypeRef};

/// Tag of this rewrite in the compiled-code cache; change it whenever the rewrite changes.
pub(crate) const CACHE_TAG: &str = "fs-audit-3";

/// The rewrite as an engine [`ModuleTransform`](wasmagent_engine::ModuleTransform), for every kernel that runs a
/// preview1 module through [`crate::host`].
pub const FS_AUDIT: wasmagent_engine::ModuleTransform<'static> =
    wasmagent_engine::ModuleTransform { cache_tag: CACHE_TAG, apply: &instrument };

const I32: ValType = ValType::I32;
const I64: ValType = ValType::I64;

/// The preview1 functions called through a wrapper, and their parameter types; each returns an `i32` errno.
/// `poll_oneoff` is guarded rather than audited: its wrapper calls the guard before the real call.
const AUDITED: &[(&str, &[ValType])] = &[
    ("poll_oneoff", &[I32, I32, I32, I32]),
    ("path_open", &[I32, I32, I32, I32, I32, I64, I64, I32, I32]),
    ("path_create_directory", &[I32, I32, I32]),
    ("path_remove_directory", &[I32, I32, I32]),
    ("path_unlink_file", &[I32, I32, I32]),
    ("path_filestat_get", &[I32, I32, I32, I32, I32]),
    ("path_filestat_set_times", &[I32, I32, I32, I32, I64, I64, I32]),
    ("path_readlink", &[I32, I32, I32, I32, I32, I32]),
    ("path_rename", &[I32, I32, I32, I32, I32, I32]),
    ("path_link", &[I32, I32, I32, I32, I32, I32, I32]),
    ("path_symlink", &[I32, I32, I32, I32, I32]),
    ("fd_renumber", &[I32, I32]),
    ("fd_close", &[I32]),
];

/// The functions whose wrapper calls the host before the real call, with the same arguments and no errno.
const GUARDED_BEFORE: &[&str] = &["poll_oneoff"];

/// The functions whose audit import is also asked before the real call, with [`BEFORE_CALL`] for the errno: it
/// returns 0 to let the call go ahead, or the errno the call then fails with (without being made). After the call
/// it is called as for any audited function, and what it returns then is ignored.
const CHECKED_BEFORE: &[&str] = &["path_open"];

/// The errno argument of an audit import asked before the call ([`CHECKED_BEFORE`]); no WASI errno is negative.
pub(crate) const BEFORE_CALL: i32 = -1;

struct Audited {
    name: &'static str,
    params: &'static [ValType],
    import_index: u32,
    type_index: u32,
}

struct Rewriter {
    imported_funcs: u32,
    defined_funcs: u32,
    types: u32,
    audited: Vec<Audited>,
    /// While re-encoding the names section, indices are shifted but not redirected, so the import keeps its name.
    in_names: bool,
}

impl Audited {
    fn guarded_before(&self) -> bool {
        GUARDED_BEFORE.contains(&self.name)
    }
    fn checked_before(&self) -> bool {
        CHECKED_BEFORE.contains(&self.name)
    }
}

impl Rewriter {
    fn added(&self) -> u32 {
        self.audited.len() as u32
    }
    fn audit_import_index(&self, j: usize) -> u32 {
        self.imported_funcs + j as u32
    }
    fn wrapper_index(&self, j: usize) -> u32 {
        self.imported_funcs + self.added() + self.defined_funcs + j as u32
    }
}

impl Reencode for Rewriter {
    type Error = std::convert::Infallible;

    fn function_index(&mut self, func: u32) -> Result<u32, wasm_encoder::reencode::Error<Self::Error>> {
        if !self.in_names
            && let Some(j) = self.audited.iter().position(|a| a.import_index == func)
        {
            return Ok(self.wrapper_index(j));
        }
        Ok(if func >= self.imported_funcs { func + self.added() } else { func })
    }

    fn parse_type_section(
        &mut self,
        types: &mut TypeSection,
        section: wasmparser::TypeSectionReader<'_>,
    ) -> Result<(), wasm_encoder::reencode::Error<Self::Error>> {
        wasm_encoder::reencode::utils::parse_type_section(self, types, section)?;
        for audited in &self.audited {
            let errno = (!audited.guarded_before()).then_some(I32);
            let params: Vec<ValType> = errno.into_iter().chain(audited.params.iter().copied()).collect();
            let results: &[ValType] = if audited.checked_before() { &[I32] } else { &[] };
            types.ty().function(params, results.iter().copied());
        }
        Ok(())
    }

    fn parse_import_section(
        &mut self,
        imports: &mut ImportSection,
        section: wasmparser::ImportSectionReader<'_>,
    ) -> Result<(), wasm_encoder::reencode::Error<Self::Error>> {
        wasm_encoder::reencode::utils::parse_import_section(self, imports, section)?;
        for (j, audited) in self.audited.iter().enumerate() {
            imports.import(AUDIT_MODULE, audited.name, wasm_encoder::EntityType::Function(self.types + j as u32));
        }
        Ok(())
    }

    fn parse_function_section(
        &mut self,
        functions: &mut FunctionSection,
        section: wasmparser::FunctionSectionReader<'_>,
    ) -> Result<(), wasm_encoder::reencode::Error<Self::Error>> {
        wasm_encoder::reencode::utils::parse_function_section(self, functions, section)?;
        for audited in &self.audited {
            functions.function(audited.type_index);
        }
        Ok(())
    }

    fn parse_code_section(
        &mut self,
        code: &mut CodeSection,
        section: wasmparser::CodeSectionReader<'_>,
    ) -> Result<(), wasm_encoder::reencode::Error<Self::Error>> {
        wasm_encoder::reencode::utils::parse_code_section(self, code, section)?;
        for (j, audited) in self.audited.iter().enumerate() {
            let params = audited.params.len() as u32;
            let errno = params; // the one extra local
            let pass_arguments = |body: &mut Function| {
                for p in 0..params {
                    body.instruction(&Instruction::LocalGet(p));
                }
            };
            let (import, audit) =
                (Instruction::Call(audited.import_index), Instruction::Call(self.audit_import_index(j)));
            let mut body = Function::new([(1, I32)]);
            if audited.guarded_before() {
                // guard(arguments); return import(arguments)
                pass_arguments(&mut body);
                body.instruction(&audit);
                pass_arguments(&mut body);
                body.instruction(&import);
            } else {
                if audited.checked_before() {
                    // errno = audit(BEFORE_CALL, arguments); if errno != 0 { return errno }
                    body.instruction(&Instruction::I32Const(BEFORE_CALL));
                    pass_arguments(&mut body);
                    body.instruction(&audit);
                    body.instruction(&Instruction::LocalTee(errno));
                    body.instruction(&Instruction::If(wasm_encoder::BlockType::Empty));
                    body.instruction(&Instruction::LocalGet(errno));
                    body.instruction(&Instruction::Return);
                    body.instruction(&Instruction::End);
                }
                // errno = import(arguments); audit(errno, arguments); return errno
                pass_arguments(&mut body);
                body.instruction(&import);
                body.instruction(&Instruction::LocalSet(errno));
                body.instruction(&Instruction::LocalGet(errno));
                pass_arguments(&mut body);
                body.instruction(&audit);
                if audited.checked_before() {
                    body.instruction(&Instruction::Drop);
                }
                body.instruction(&Instruction::LocalGet(errno));
            }
            body.instruction(&Instruction::End);
            code.function(&body);
        }
        Ok(())
    }

    fn parse_custom_section(
        &mut self,
        module: &mut wasm_encoder::Module,
        section: wasmparser::CustomSectionReader<'_>,
    ) -> Result<(), wasm_encoder::reencode::Error<Self::Error>> {
        self.in_names = section.name() == "name";
        let result = wasm_encoder::reencode::utils::parse_custom_section(self, module, section);
        self.in_names = false;
        result
    }
}

/// Returns the module with audit wrappers, or `None` when it makes no audited WASI call (nothing to rewrite).
pub fn instrument(binary: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut rewriter = Rewriter { imported_funcs: 0, defined_funcs: 0, types: 0, audited: Vec::new(), in_names: false };
    let mut func_types: Vec<Option<wasmparser::FuncType>> = Vec::new();
    for payload in Parser::new(0).parse_all(binary) {
        match payload.map_err(|e| format!("malformed module: {e}"))? {
            Payload::TypeSection(reader) => {
                for group in reader {
                    let group = group.map_err(|e| format!("malformed type section: {e}"))?;
                    for ty in group.into_types() {
                        func_types.push(match ty.composite_type.inner {
                            wasmparser::CompositeInnerType::Func(f) => Some(f),
                            _ => None,
                        });
                    }
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(|e| format!("malformed import section: {e}"))?;
                    if import.module == AUDIT_MODULE {
                        return Err(format!("the module imports from the reserved module {AUDIT_MODULE:?}"));
                    }
                    let (TypeRef::Func(type_index) | TypeRef::FuncExact(type_index)) = import.ty else {
                        continue;
                    };
                    let expected = AUDITED.iter().find(|(name, _)| *name == import.name);
                    let signature = func_types.get(type_index as usize).and_then(Option::as_ref);
                    if let (Some((name, params)), Some(signature), "wasi_snapshot_preview1") =
                        (expected, signature, import.module)
                    {
                        let matches = signature.results() == [wasmparser::ValType::I32]
                            && signature.params().len() == params.len()
                            && signature.params().iter().zip(params.iter()).all(|(a, b)| same_type(*a, *b));
                        if matches {
                            rewriter.audited.push(Audited {
                                name,
                                params,
                                import_index: rewriter.imported_funcs,
                                type_index,
                            });
                        }
                    }
                    rewriter.imported_funcs += 1;
                }
            }
            Payload::FunctionSection(reader) => rewriter.defined_funcs = reader.count(),
            _ => {}
        }
    }
    rewriter.types = func_types.len() as u32;
    if rewriter.audited.is_empty() || rewriter.defined_funcs == 0 {
        return Ok(None);
    }
    let mut module = wasm_encoder::Module::new();
    rewriter
        .parse_core_module(&mut module, Parser::new(0), binary)
        .map_err(|e| format!("cannot instrument the module: {e}"))?;
    Ok(Some(module.finish()))
}

fn same_type(a: wasmparser::ValType, b: ValType) -> bool {
    matches!((a, b), (wasmparser::ValType::I32, ValType::I32) | (wasmparser::ValType::I64, ValType::I64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wat(text: &str) -> Vec<u8> {
        wat::parse_str(text).unwrap()
    }

    #[test]
    fn modules_without_audited_imports_are_left_alone() {
        let module = wat(
            r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32))) (func (export "_start")))"#,
        );
        assert_eq!(instrument(&module).unwrap(), None);
    }

    #[test]
    fn calls_to_an_audited_import_go_through_a_wrapper_that_reports() {
        let module = wat(r#"(module
                (import "wasi_snapshot_preview1" "path_create_directory" (func $mk (param i32 i32 i32) (result i32)))
                (memory (export "memory") 1)
                (func $main (export "_start") (drop (call $mk (i32.const 3) (i32.const 0) (i32.const 1))))
                (elem declare func $mk))"#);
        let rewritten = instrument(&module).unwrap().unwrap();
        wasmparser::Validator::new().validate_all(&rewritten).unwrap();
        let text = wasmprinter::print_bytes(&rewritten).unwrap();
        assert!(text.contains("(import \"wasmagent:fs-audit\" \"path_create_directory\""), "{text}");
        // _start now calls the wrapper (index 3: one import, one audit import, one defined function), and the
        // wrapper calls the original import (index 0) and then the audit import (index 1).
        assert!(text.contains("call 3") || text.contains("call $mk"), "{text}");
    }

    #[test]
    fn path_open_asks_the_host_first_and_is_not_made_when_refused() {
        let module = wat(r#"(module
                (import "wasi_snapshot_preview1" "path_open"
                    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
                (memory (export "memory") 1)
                (func (export "open") (result i32)
                    (call $open (i32.const 3) (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 0)
                        (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 16))))"#);
        let rewritten = instrument(&module).unwrap().unwrap();
        let engine = wasmtime::Engine::default();
        let module = wasmtime::Module::new(&engine, &rewritten).unwrap();
        // The store holds what the host answers before the call, and the calls seen (audit errno, or "real").
        let mut linker = wasmtime::Linker::<(i32, Vec<String>)>::new(&engine);
        linker
            .func_wrap(
                "wasi_snapshot_preview1",
                "path_open",
                |mut caller: wasmtime::Caller<'_, (i32, Vec<String>)>,
                 _: i32,
                 _: i32,
                 _: i32,
                 _: i32,
                 _: i32,
                 _: i64,
                 _: i64,
                 _: i32,
                 _: i32|
                 -> i32 {
                    caller.data_mut().1.push("real".into());
                    44
                },
            )
            .unwrap();
        linker
            .func_wrap(
                AUDIT_MODULE,
                "path_open",
                |mut caller: wasmtime::Caller<'_, (i32, Vec<String>)>,
                 errno: i32,
                 _: i32,
                 _: i32,
                 _: i32,
                 _: i32,
                 _: i32,
                 _: i64,
                 _: i64,
                 _: i32,
                 _: i32|
                 -> i32 {
                    caller.data_mut().1.push(format!("audit {errno}"));
                    if errno == BEFORE_CALL { caller.data().0 } else { 99 }
                },
            )
            .unwrap();
        for (answer, result, calls) in [(2, 2, vec!["audit -1"]), (0, 44, vec!["audit -1", "real", "audit 44"])] {
            let mut store = wasmtime::Store::new(&engine, (answer, Vec::new()));
            let instance = linker.instantiate(&mut store, &module).unwrap();
            let open = instance.get_typed_func::<(), i32>(&mut store, "open").unwrap();
            assert_eq!(open.call(&mut store, ()).unwrap(), result, "the host answered {answer}");
            assert_eq!(store.data().1, calls, "the host answered {answer}");
        }
    }

    #[test]
    fn importing_the_audit_module_directly_is_refused() {
        let module = wat(r#"(module (import "wasmagent:fs-audit" "path_open" (func)) (func (export "_start")))"#);
        assert!(instrument(&module).unwrap_err().contains("reserved"));
    }
}
