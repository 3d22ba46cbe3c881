//! One sandboxed instance of a plugin, initialized with a chain step's config, and the ABI v1
//! calling convention: the host allocates and writes the input, the guest frees it; the guest
//! allocates the reply, the host copies it out and frees it.

use std::sync::Arc;

use wasmtime::{Instance as WasmInstance, Memory, Store, StoreLimitsBuilder, Trap, TypedFunc};

use super::error::{CallError, LoadError};
use super::runtime::{Compiled, HostState, Runtime};

/// A hook export: `(input pointer, input length) -> reply pointer << 32 | reply length`.
type Hook = TypedFunc<(i32, i32), i64>;

/// An instance ready for hook calls. Discarded after any failed call (its state may be
/// anything after a trap), so a fresh one comes from the compiled module.
pub struct Instance {
    store: Store<HostState>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    free: TypedFunc<(i32, i32), ()>,
    instance: WasmInstance,
    /// Hooks already looked up, by export name: finding an export by name and checking its
    /// type was ~15% of a validate call. An instance serves one chain step, so one or two.
    hooks: Vec<(Box<str>, Hook)>,
}

impl Instance {
    /// Instantiate `compiled` and hand it `config` (CBOR) through `wasmkv_init`, if the module
    /// takes one.
    pub fn new(
        runtime: &Runtime,
        compiled: &Compiled,
        plugin: &Arc<str>,
        config: &[u8],
    ) -> Result<Instance, LoadError> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(usize::try_from(runtime.limits.memory).unwrap_or(usize::MAX))
            .instances(1)
            .tables(4)
            .memories(1)
            .build();
        let mut store = Store::new(
            runtime.engine(),
            HostState {
                limits,
                plugin: Arc::clone(plugin),
            },
        );
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_trap();
        let init_error = |reason: String| LoadError::Init {
            name: plugin.to_string(),
            reason,
        };
        arm(&mut store, runtime).map_err(|e| init_error(e.to_string()))?;
        let instance = compiled
            .pre
            .instantiate(&mut store)
            .map_err(|e| init_error(describe(e, runtime).to_string()))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| init_error("no memory".into()))?;
        let alloc = instance
            .get_typed_func(&mut store, "wasmkv_alloc")
            .map_err(|e| init_error(format!("{e:#}")))?;
        let free = instance
            .get_typed_func(&mut store, "wasmkv_free")
            .map_err(|e| init_error(format!("{e:#}")))?;
        let mut ready = Instance {
            store,
            memory,
            alloc,
            free,
            instance,
            hooks: Vec::new(),
        };
        if compiled.hooks.init {
            match ready.raw_call(runtime, "wasmkv_init", config, true) {
                Ok(_) => {}
                Err(e) => return Err(init_error(e.to_string())),
            }
        }
        Ok(ready)
    }

    /// Call `export` with `input`; returns the reply bytes. `init` marks `wasmkv_init`,
    /// whose 0 result means success with no reply.
    pub fn call(
        &mut self,
        runtime: &Runtime,
        export: &str,
        input: &[u8],
    ) -> Result<Vec<u8>, CallError> {
        self.raw_call(runtime, export, input, false)
    }

    /// The hook `export`, looked up on its first call only.
    fn hook(&mut self, export: &str) -> Result<Hook, CallError> {
        if let Some((_, hook)) = self.hooks.iter().find(|(name, _)| &**name == export) {
            return Ok(hook.clone());
        }
        let hook: Hook = self
            .instance
            .get_typed_func(&mut self.store, export)
            .map_err(|e| CallError::BadOutput(format!("{export}: {e:#}")))?;
        self.hooks.push((export.into(), hook.clone()));
        Ok(hook)
    }

    fn raw_call(
        &mut self,
        runtime: &Runtime,
        export: &str,
        input: &[u8],
        init: bool,
    ) -> Result<Vec<u8>, CallError> {
        let hook = self.hook(export)?;
        arm(&mut self.store, runtime)?;
        let len = i32::try_from(input.len())
            .map_err(|_| CallError::BadOutput("input larger than 2 GiB".into()))?;
        let ptr = self
            .alloc
            .call(&mut self.store, len)
            .map_err(|e| describe(e, runtime))?;
        if ptr == 0 {
            return Err(CallError::BadOutput(
                "wasmkv_alloc returned 0 (out of memory)".into(),
            ));
        }
        self.memory
            .write(&mut self.store, ptr as u32 as usize, input)
            .map_err(|_| {
                CallError::BadOutput("wasmkv_alloc returned a pointer outside memory".into())
            })?;
        let result = hook
            .call(&mut self.store, (ptr, len))
            .map_err(|e| describe(e, runtime))? as u64;
        if init && result == 0 {
            return Ok(Vec::new());
        }
        let (reply_ptr, reply_len) = ((result >> 32) as usize, (result & 0xffff_ffff) as usize);
        if reply_len == 0 {
            return Err(CallError::BadOutput("an empty reply".into()));
        }
        let mut reply = vec![0u8; reply_len];
        self.memory
            .read(&self.store, reply_ptr, &mut reply)
            .map_err(|_| {
                CallError::BadOutput(format!(
                    "a reply of {reply_len} bytes at {reply_ptr} outside its memory"
                ))
            })?;
        self.free
            .call(&mut self.store, (reply_ptr as i32, reply_len as i32))
            .map_err(|e| describe(e, runtime))?;
        if init {
            // A non-zero init result is an error message.
            let message = match wasmkv_guest::abi::decode_reply::<String>(&reply) {
                Ok(text) | Err(wasmkv_guest::abi::ReplyError::Guest(text)) => text,
                Err(other) => other.to_string(),
            };
            return Err(CallError::Guest(message));
        }
        Ok(reply)
    }
}

/// Give the next call its deadline and fuel.
fn arm(store: &mut Store<HostState>, runtime: &Runtime) -> Result<(), CallError> {
    store.set_epoch_deadline(runtime.deadline_ticks());
    if runtime.limits.fuel > 0 {
        store
            .set_fuel(runtime.limits.fuel)
            .map_err(|e| CallError::Trap(format!("{e:#}")))?;
    }
    Ok(())
}

/// A failed wasm call as a [`CallError`]: epoch interruption is the deadline.
fn describe(error: wasmtime::Error, runtime: &Runtime) -> CallError {
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallError::Timeout(runtime.limits.deadline),
        Some(trap) => CallError::Trap(trap.to_string()),
        None => CallError::Trap(format!("{error:#}")),
    }
}
