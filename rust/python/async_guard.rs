//! `AsyncGuard`: an `async def` function guarded without a coroutine of its own. Calling
//! it returns a `GuardedCall`, a native awaitable that takes the admission when first
//! stepped, drives the function's coroutine and records how it ended: the steps of a
//! Python wrapper coroutine (a frame, three calls into Rust) become one object and plain
//! Rust. What is rare and may wait (a refusal, a retry, a fallback) is handed to Python
//! coroutines given at construction, which the call then drives in place of its own. A
//! call that returned lets go of what it held and, once nobody else holds it, is its
//! guard's next call (`AsyncGuard::spare`): most calls allocate no object.

use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use pyo3::exceptions::{PyException, PyRuntimeError, PyStopIteration};
use pyo3::ffi;
use pyo3::gc::PyVisit;
use pyo3::impl_::trampoline;
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3::PyTraverseError;

use crate::clock::{nanos_to_seconds, stopwatch};
use crate::guard::Timing;
use crate::remote::Ticket;

use super::guard::{as_method_descriptor, bound_method, Guard};

/// Adds `AsyncGuard` (callable, and a method descriptor as `Guard` is) and `GuardedCall`.
pub fn add_to(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let class = m.py().get_type::<AsyncGuard>();
    // `guard.__call__` too, as functions have it: the method `_call`, stored under that
    // name in the type's dict directly (setting the attribute would replace the slot).
    let method = class.getattr("_call")?;
    // SAFETY: the type object is alive (we hold it) and no instance exists yet; the slot
    // is a function with tp_call's signature; a heap type's tp_dict is its own dict;
    // PyType_Modified clears what cached the type.
    unsafe {
        let raw = class.as_type_ptr();
        (*raw).tp_call = Some(call_async_guard);
        if ffi::PyDict_SetItemString((*raw).tp_dict, c"__call__".as_ptr(), method.as_ptr()) != 0 {
            return Err(PyErr::fetch(m.py()));
        }
        ffi::PyType_Modified(raw);
    }
    as_method_descriptor(&class);
    m.add_class::<AsyncGuard>()?;
    let call_class = m.py().get_type::<GuardedCall>();
    // `send`, a METH_O method of its own, and am_send (what tasks and `await` step a call
    // with: its return comes back without a StopIteration), set as `Guard`'s tp_call is:
    // no argument parsing nor error object in a step (see `SEND_GUARDED_CALL`).
    let send: &'static mut ffi::PyMethodDef = Box::leak(Box::new(ffi::PyMethodDef {
        ml_name: c"send".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunction: SEND_GUARDED_CALL,
        },
        ml_flags: ffi::METH_O,
        ml_doc: c"send($self, value, /)\n--\n\nSteps the call with value sent in, as a coroutine's send."
            .as_ptr(),
    }));
    let (major, minor) = (m.py().version_info().major, m.py().version_info().minor);
    // SAFETY: the type object is alive (we hold it) and no instance exists yet; the method
    // definition lives as long as the process (leaked, once per module); a pyclass with
    // `__await__` has its heap type's own tp_as_async (checked); PyType_Modified clears
    // what cached the type.
    unsafe {
        let raw = call_class.as_type_ptr();
        let descriptor = ffi::PyDescr_NewMethod(raw, send);
        if descriptor.is_null() {
            return Err(PyErr::fetch(m.py()));
        }
        let set = ffi::PyDict_SetItemString((*raw).tp_dict, c"send".as_ptr(), descriptor);
        ffi::Py_DECREF(descriptor);
        if set != 0 {
            return Err(PyErr::fetch(m.py()));
        }
        let slots = (*raw).tp_as_async;
        if slots.is_null() {
            return Err(PyRuntimeError::new_err("GuardedCall has no async slots"));
        }
        (*slots).am_send = Some(am_send_guarded_call);
        if (major, minor) == (3, 10) {
            // Py_TPFLAGS_HAVE_AM_SEND: 3.10's PyIter_Send reads am_send only with it (3.11
            // reads the slot itself and gave the bit up).
            (*raw).tp_flags |= 1 << 21;
        }
        ffi::PyType_Modified(raw);
    }
    m.add_class::<GuardedCall>()
}

/// `GuardedCall.send(value)`, installed by `add_to` as a METH_O method (CPython calls it
/// with the value: no argument tuple nor parsing). Run in PyO3's own trampoline for a
/// two-argument slot, as a PyO3 method is (attached for PyO3 without asking CPython's
/// thread state, which `Python::attach` would here: ~20 ns; panics caught).
const SEND_GUARDED_CALL: ffi::PyCFunction = trampoline::binaryfunc::<SendStep>;

struct SendStep;

impl trampoline::MethodDef<trampoline::binaryfunc::Func> for SendStep {
    const METH: trampoline::binaryfunc::Func = send_step;
}

/// A return ends `send` with StopIteration set as a coroutine's own `send` sets it:
/// lazily, made only if someone catches it.
///
/// # Safety
/// Attached (the trampoline), `slf` and `value` live and borrowed.
unsafe fn send_step(
    py: Python<'_>,
    slf: *mut ffi::PyObject,
    value: *mut ffi::PyObject,
) -> PyResult<*mut ffi::PyObject> {
    // SAFETY: per this function's contract.
    match unsafe { step_at(py, slf, value) }? {
        Step::Yielded(yielded) => Ok(yielded.into_ptr()),
        Step::Returned(value) => {
            // SAFETY: attached; a live object.
            unsafe { set_stop_iteration(value.as_ptr()) };
            Ok(ptr::null_mut())
        }
    }
}

/// `GuardedCall`'s am_send, installed by `add_to`: what `PyIter_Send` calls (an asyncio
/// task's step, `await` in a coroutine), a return handed back as the result. Run in the
/// trampoline `send` runs in, its second argument carrying the value and where the step
/// says how it ended (the trampoline passes it through untouched). Not PyO3's
/// three-argument one: it is `Guard.__call__`'s, which a second user made 36
/// instructions longer on every sync guarded call (callgrind).
unsafe extern "C" fn am_send_guarded_call(
    slf: *mut ffi::PyObject,
    value: *mut ffi::PyObject,
    result: *mut *mut ffi::PyObject,
) -> ffi::PySendResult {
    let mut sent = Sent {
        value,
        ended: ffi::PySendResult::PYGEN_ERROR,
    };
    // SAFETY: CPython calls am_send attached, with live objects and a writable `result`;
    // `sent` outlives the call.
    unsafe {
        let out = trampoline::binaryfunc::<AmSendStep>(slf, (&raw mut sent).cast());
        *result = out;
        if out.is_null() {
            ffi::PySendResult::PYGEN_ERROR
        } else {
            sent.ended
        }
    }
}

/// What am_send hands its step: the value sent in, and where it says how the step ended.
struct Sent {
    value: *mut ffi::PyObject,
    ended: ffi::PySendResult,
}

struct AmSendStep;

impl trampoline::MethodDef<trampoline::binaryfunc::Func> for AmSendStep {
    const METH: trampoline::binaryfunc::Func = am_send_step;
}

/// # Safety
/// Attached (the trampoline), `slf` live and borrowed, `sent` the `Sent` of
/// `am_send_guarded_call`, its value live and borrowed.
unsafe fn am_send_step(
    py: Python<'_>,
    slf: *mut ffi::PyObject,
    sent: *mut ffi::PyObject,
) -> PyResult<*mut ffi::PyObject> {
    // SAFETY: per this function's contract.
    let sent = unsafe { &mut *sent.cast::<Sent>() };
    // SAFETY: per this function's contract.
    let (ended, out) = match unsafe { step_at(py, slf, sent.value) }? {
        Step::Yielded(yielded) => (ffi::PySendResult::PYGEN_NEXT, yielded),
        Step::Returned(value) => (ffi::PySendResult::PYGEN_RETURN, value),
    };
    sent.ended = ended;
    Ok(out.into_ptr())
}

/// Steps the call at `slf` with `value` sent in (`send` and am_send); a call that
/// returns becomes its guard's spare.
///
/// # Safety
/// Attached, `slf` and `value` live (borrowed); `slf` need not be a `GuardedCall`.
#[inline(always)]
unsafe fn step_at(
    py: Python<'_>,
    slf: *mut ffi::PyObject,
    value: *mut ffi::PyObject,
) -> PyResult<Step> {
    // SAFETY: per this function's contract.
    let slf = unsafe { Bound::from_borrowed_ptr(py, slf) };
    let value = unsafe { Bound::from_borrowed_ptr(py, value) };
    let slf = slf.cast::<GuardedCall>()?;
    let mut call = slf.try_borrow_mut()?;
    // The guard, to give the call to as its spare if it returns now.
    let owner = match &call.state {
        State::New(owner) => Some(owner.clone_ref(py)),
        State::Running(running) => Some(running.owner.clone_ref(py)),
        State::Handed(_) | State::Done => None,
    };
    let stepped = call.step(py, Input::Send(&value));
    if let (Ok(Step::Returned(_)), Some(owner)) = (&stepped, owner) {
        // Done: it lets go of its arguments as a coroutine of its own would.
        call.args = PyTuple::empty(py).unbind();
        call.kwargs = None;
        drop(call);
        owner.get().keep_spare(slf.clone());
    }
    stepped
}

/// Sets StopIteration(value) as CPython's coroutines do (`_PyGen_SetStopIterationValue`):
/// the value alone, the exception made when caught; made now only for a tuple (which
/// would be taken for its arguments) or an exception (for the exception itself).
///
/// # Safety
/// Attached, `value` live.
unsafe fn set_stop_iteration(value: *mut ffi::PyObject) {
    unsafe {
        if value == ffi::Py_None() {
            ffi::PyErr_SetNone(ffi::PyExc_StopIteration);
        } else if ffi::PyTuple_Check(value) == 0 && ffi::PyExceptionInstance_Check(value) == 0 {
            ffi::PyErr_SetObject(ffi::PyExc_StopIteration, value);
        } else {
            let made = ffi::PyObject_CallOneArg(ffi::PyExc_StopIteration, value);
            if !made.is_null() {
                ffi::PyErr_SetObject(ffi::PyExc_StopIteration, made);
                ffi::Py_DECREF(made);
            }
        }
    }
}

/// `AsyncGuard`'s tp_call, set by `add_to` rather than declared as `__call__`: PyO3 runs
/// every `__call__` through one shared trampoline taking the method as a pointer, which
/// the optimiser resolves and inlines only while `Guard.__call__` is its one user (a
/// second one measured 57 more instructions on every sync guarded call).
unsafe extern "C" fn call_async_guard(
    slf: *mut ffi::PyObject,
    args: *mut ffi::PyObject,
    kwargs: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls tp_call attached to the interpreter.
    let py = unsafe { Python::assume_attached() };
    let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: tp_call's arguments are live: `slf` an instance of the type (checked
        // anyway), `args` a tuple, `kwargs` a dict or NULL.
        let slf = unsafe { Bound::from_borrowed_ptr(py, slf) };
        let args = unsafe { Bound::from_borrowed_ptr(py, args).cast_into_unchecked::<PyTuple>() };
        let kwargs = (!kwargs.is_null()).then(|| unsafe {
            Bound::from_borrowed_ptr(py, kwargs).cast_into_unchecked::<PyDict>()
        });
        let guard = slf.cast::<AsyncGuard>()?;
        AsyncGuard::call(guard, &args, kwargs.as_ref())
    }));
    let made = match made {
        Ok(made) => made,
        Err(_) => Err(PanicException::new_err("a guarded async call panicked")),
    };
    match made {
        Ok(call) => call.into_ptr(),
        Err(err) => {
            err.restore(py);
            ptr::null_mut()
        }
    }
}

/// An `async def` function guarded by a native `Guard`; calling it returns the call's
/// awaitable (`GuardedCall`).
#[pyclass(frozen, dict, module = "peak_resilience._native", name = "AsyncGuard")]
pub struct AsyncGuard {
    guard: Py<Guard>,
    /// after_refusal(refusal, args, kwargs): the coroutine run when the first admission
    /// is refused (it may wait for a slot, retry, fall back or raise the refusal).
    after_refusal: Py<PyAny>,
    /// after_failure(error, args, kwargs, falls_back): the coroutine run when the call
    /// raised an Exception (recorded already) and is retried or falls back.
    after_failure: Py<PyAny>,
    /// With a timeout: the function's deadlines, entered when a call first suspends.
    deadlines: Option<Deadlines>,
    /// A finished call (a `GuardedCall` holding nothing), given to the next call once
    /// nobody else holds it: most calls then allocate and free no object (see `spare`).
    spare: AtomicPtr<ffi::PyObject>,
}

impl Drop for AsyncGuard {
    fn drop(&mut self) {
        let spare = *self.spare.get_mut();
        if !spare.is_null() {
            // SAFETY: the spare is a reference we own.
            Python::attach(|py| drop(unsafe { Bound::from_owned_ptr(py, spare) }));
        }
    }
}

/// The Python side of a timeout (see `_deadlines.py`).
struct Deadlines {
    /// start(elapsed) -> entry: the call, running for `elapsed` seconds, suspends.
    start: Py<PyAny>,
    /// ended(entry): the call returned.
    ended: Py<PyAny>,
    /// failed(entry or None, error) -> the error the caller gets.
    failed: Py<PyAny>,
}

#[pymethods]
impl AsyncGuard {
    #[new]
    #[pyo3(signature = (guard, after_refusal, after_failure, *, deadline_start=None, deadline_ended=None, deadline_failed=None))]
    fn new(
        guard: Py<Guard>,
        after_refusal: Py<PyAny>,
        after_failure: Py<PyAny>,
        deadline_start: Option<Py<PyAny>>,
        deadline_ended: Option<Py<PyAny>>,
        deadline_failed: Option<Py<PyAny>>,
    ) -> Self {
        let deadlines = match (deadline_start, deadline_ended, deadline_failed) {
            (Some(start), Some(ended), Some(failed)) => Some(Deadlines {
                start,
                ended,
                failed,
            }),
            _ => None,
        };
        AsyncGuard {
            guard,
            after_refusal,
            after_failure,
            deadlines,
            spare: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// Binds the guard to an instance, so that it decorates methods too.
    fn __get__<'py>(
        slf: &Bound<'py, Self>,
        instance: Option<&Bound<'py, PyAny>>,
        _owner: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        bound_method(slf.as_any(), instance)
    }

    /// The native guard: breaker, limiter, bulkhead, retry and stats.
    #[getter]
    fn guard(&self, py: Python<'_>) -> Py<Guard> {
        self.guard.clone_ref(py)
    }

    /// `guard(*args, **kwargs)` as a method: `__call__` (calls take the slot).
    #[pyo3(signature = (*args, **kwargs))]
    fn _call(
        slf: &Bound<'_, Self>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<GuardedCall>> {
        AsyncGuard::call(slf, args, kwargs)
    }
}

impl AsyncGuard {
    /// A call's awaitable (see `call_async_guard`): nothing runs until it is awaited.
    #[inline]
    fn call(
        slf: &Bound<'_, Self>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<GuardedCall>> {
        let py = slf.py();
        if let Some(spare) = slf.get().spare(py) {
            if let Ok(mut call) = spare.try_borrow_mut() {
                debug_assert!(matches!(call.state, State::Done));
                // (What is replaced is dropped as a `Bound`: this may run unattached for
                // PyO3, which would only queue a `Py` dropped here.)
                drop(std::mem::replace(&mut call.args, args.clone().unbind()).into_bound(py));
                let kwargs = kwargs.map(|k| k.clone().unbind());
                if let Some(old) = std::mem::replace(&mut call.kwargs, kwargs) {
                    drop(old.into_bound(py));
                }
                call.state = State::New(slf.clone().unbind());
                drop(call);
                return Ok(spare.unbind());
            }
        }
        Py::new(
            py,
            GuardedCall {
                args: args.clone().unbind(),
                kwargs: kwargs.map(|k| k.clone().unbind()),
                state: State::New(slf.clone().unbind()),
            },
        )
    }

    /// The spare call, if nobody but the guard holds it (a caller may keep a finished
    /// call: then it is theirs, and let go of here).
    #[inline]
    fn spare<'py>(&self, py: Python<'py>) -> Option<Bound<'py, GuardedCall>> {
        let spare = self.spare.swap(ptr::null_mut(), Ordering::AcqRel);
        if spare.is_null() {
            return None;
        }
        // SAFETY: the spare is a reference we own, to a GuardedCall (see `keep_spare`).
        let spare =
            unsafe { Bound::from_owned_ptr(py, spare).cast_into_unchecked::<GuardedCall>() };
        // Only ours (the swap gave us the one reference the guard held): nobody can step,
        // close or borrow it any more.
        // SAFETY: a live object.
        (unsafe { ffi::Py_REFCNT(spare.as_ptr()) } == 1).then_some(spare)
    }

    /// Keeps `call`, finished and holding nothing, as the next call's spare.
    #[inline]
    fn keep_spare(&self, call: Bound<'_, GuardedCall>) {
        let py = call.py();
        let previous = self.spare.swap(call.into_ptr(), Ordering::AcqRel);
        if !previous.is_null() {
            // SAFETY: the previous spare was a reference we owned.
            drop(unsafe { Bound::from_owned_ptr(py, previous) });
        }
    }
}

/// Where a guarded call is.
enum State {
    /// Not stepped yet: nothing taken.
    New(Py<AsyncGuard>),
    /// Admitted; the function's coroutine runs.
    Running(Running),
    /// A Python coroutine runs in the call's place (after a refusal or a failure).
    Handed(Py<PyAny>),
    /// Returned or raised.
    Done,
}

struct Running {
    owner: Py<AsyncGuard>,
    coroutine: Py<PyAny>,
    ticket: Ticket,
    timing: Timing,
    /// With a timeout: when the call started (a `stopwatch` reading, real time whatever
    /// the guard's clock, as the loop's is), for the deadline of its first suspension.
    started: Option<u64>,
    /// The call's entry in its function's deadlines, once it has suspended.
    deadline: Option<Py<PyAny>>,
}

/// What one step of a coroutine gave.
enum Step {
    Yielded(Py<PyAny>),
    Returned(Py<PyAny>),
}

/// One call of an `AsyncGuard`: a coroutine-like awaitable (send, throw, close).
#[pyclass(module = "peak_resilience._native", name = "GuardedCall")]
pub struct GuardedCall {
    /// The call's arguments (none once it is done: a spare holds nothing). Its guard is
    /// in its state while it runs.
    args: Py<PyTuple>,
    kwargs: Option<Py<PyDict>>,
    state: State,
}

/// Sends `value` into `coroutine` (`PyIter_Send`: a coroutine's return needs no
/// StopIteration).
#[inline]
fn send_into(coroutine: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<Step> {
    let py = coroutine.py();
    let mut out: *mut ffi::PyObject = ptr::null_mut();
    // SAFETY: both pointers are live objects held by the caller; PyIter_Send gives a new
    // reference in `out` unless it returns PYGEN_ERROR.
    let sent = unsafe { ffi::PyIter_Send(coroutine.as_ptr(), value.as_ptr(), &mut out) };
    match sent {
        ffi::PySendResult::PYGEN_NEXT => Ok(Step::Yielded(
            unsafe { Bound::from_owned_ptr(py, out) }.unbind(),
        )),
        ffi::PySendResult::PYGEN_RETURN => Ok(Step::Returned(
            unsafe { Bound::from_owned_ptr(py, out) }.unbind(),
        )),
        ffi::PySendResult::PYGEN_ERROR => Err(PyErr::fetch(py)),
    }
}

/// Throws into `coroutine` what `throw(*args)` was given (its own method: rare).
fn throw_into(coroutine: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>) -> PyResult<Step> {
    match coroutine.call_method1("throw", args) {
        Ok(yielded) => Ok(Step::Yielded(yielded.unbind())),
        Err(err) => returned_by(coroutine.py(), err),
    }
}

/// A StopIteration raised by a coroutine's method is its return.
fn returned_by(py: Python<'_>, err: PyErr) -> PyResult<Step> {
    if err.is_instance_of::<PyStopIteration>(py) {
        Ok(Step::Returned(err.value(py).getattr("value")?.unbind()))
    } else {
        Err(err)
    }
}

/// The awaitable iterator of what an `async def` function returned.
#[inline]
fn awaited(called: Bound<'_, PyAny>) -> PyResult<Bound<'_, PyAny>> {
    // SAFETY: a live object.
    if unsafe { ffi::PyCoro_CheckExact(called.as_ptr()) } != 0 {
        return Ok(called);
    }
    called.call_method0("__await__")
}

/// The exception `throw(*args)` asks for, for a call that is not running.
fn thrown(args: &Bound<'_, PyTuple>) -> PyErr {
    match args.get_item(1) {
        Ok(value) if !value.is_none() => PyErr::from_value(value),
        _ => match args.get_item(0) {
            Ok(first) => PyErr::from_value(first),
            Err(err) => err,
        },
    }
}

impl GuardedCall {
    /// Steps the call with `input`: `value` sent, or `throw(*args)`.
    fn step(&mut self, py: Python<'_>, input: Input<'_, '_>) -> PyResult<Step> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::New(owner) => match input {
                Input::Send(value) => self.start(py, owner, value),
                // Like a coroutine never started: it ends with the exception.
                Input::Throw(args) => Err(thrown(args)),
            },
            State::Running(running) => {
                let stepped = {
                    let coroutine = running.coroutine.bind(py);
                    match input {
                        Input::Send(value) => send_into(coroutine, value),
                        Input::Throw(args) => throw_into(coroutine, args),
                    }
                };
                self.after(py, running, stepped)
            }
            State::Handed(coroutine) => {
                let stepped = match input {
                    Input::Send(value) => send_into(coroutine.bind(py), value),
                    Input::Throw(args) => throw_into(coroutine.bind(py), args),
                };
                if let Ok(Step::Yielded(_)) = stepped {
                    self.state = State::Handed(coroutine);
                }
                stepped
            }
            State::Done => match input {
                Input::Send(_) => Err(PyRuntimeError::new_err(
                    "cannot reuse already awaited coroutine",
                )),
                Input::Throw(args) => Err(thrown(args)),
            },
        }
    }

    /// The first step: the admission, then the function's first step.
    #[inline]
    fn start(
        &mut self,
        py: Python<'_>,
        owner_ref: Py<AsyncGuard>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<Step> {
        let owner = owner_ref.get();
        let guard = owner.guard.get();
        let (ticket, timing) = match guard.enter_now(py) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                let args = (
                    refusal.into_value(py),
                    self.args.clone_ref(py),
                    self.kwargs(py),
                );
                let handed = owner.after_refusal.bind(py).call1(args)?;
                return self.hand_to(handed, value);
            }
        };
        let started = owner.deadlines.as_ref().map(|_| {
            timing
                .stopwatch_reading(guard.clock())
                .unwrap_or_else(|| stopwatch().raw())
        });
        let called = guard
            .function()
            .bind(py)
            .call(self.args.bind(py), self.kwargs.as_ref().map(|k| k.bind(py)))
            .and_then(awaited);
        let (coroutine, stepped) = match called {
            Ok(coroutine) => {
                let stepped = send_into(&coroutine, value);
                (coroutine.unbind(), stepped)
            }
            Err(err) => (py.None(), Err(err)),
        };
        let running = Running {
            owner: owner_ref,
            coroutine,
            ticket,
            timing,
            started,
            deadline: None,
        };
        self.after(py, running, stepped)
    }

    /// What a step of the function's coroutine gave: a suspension (the deadline is
    /// entered at the first), its return, or its exception.
    #[inline]
    fn after(
        &mut self,
        py: Python<'_>,
        mut running: Running,
        stepped: PyResult<Step>,
    ) -> PyResult<Step> {
        match stepped {
            Ok(Step::Yielded(yielded)) => {
                if running.deadline.is_none() {
                    if let (Some(deadlines), Some(started)) =
                        (&running.owner.get().deadlines, running.started)
                    {
                        // A call that never suspends cannot be cancelled by a timer: only
                        // one that does is entered, with the time it has run already.
                        let clock = stopwatch();
                        let elapsed = nanos_to_seconds(clock.delta_as_nanos(started, clock.raw()));
                        match deadlines.start.call1(py, (elapsed,)) {
                            Ok(entry) => running.deadline = Some(entry),
                            Err(err) => {
                                self.state = State::Running(running);
                                self.abandon(py);
                                return Err(err);
                            }
                        }
                    }
                }
                self.state = State::Running(running);
                Ok(Step::Yielded(yielded))
            }
            Ok(Step::Returned(value)) => {
                let owner = running.owner.get();
                owner
                    .guard
                    .get()
                    .returned(py, running.ticket, running.timing, value.bind(py));
                if let (Some(deadlines), Some(entry)) = (&owner.deadlines, &running.deadline) {
                    deadlines.ended.call1(py, (entry,))?;
                }
                Ok(Step::Returned(value))
            }
            Err(mut err) => {
                let owner = running.owner.get();
                if let Some(deadlines) = &owner.deadlines {
                    let entry = running
                        .deadline
                        .as_ref()
                        .map_or_else(|| py.None(), |e| e.clone_ref(py));
                    // (A failing hook leaves the error as it was: the outcome is recorded.)
                    if let Ok(given) = deadlines.failed.bind(py).call1((entry, err.value(py))) {
                        if !given.is(err.value(py)) {
                            err = PyErr::from_value(given);
                        }
                    }
                }
                let guard = owner.guard.get();
                let falls_back = guard.raised(py, running.ticket, running.timing, &err);
                let is_exception = err.is_instance_of::<PyException>(py);
                if falls_back || (is_exception && guard.retries()) {
                    let args = (
                        err.into_value(py),
                        self.args.clone_ref(py),
                        self.kwargs(py),
                        falls_back,
                    );
                    let handed = owner.after_failure.bind(py).call1(args)?;
                    return self.hand_to(handed, &py.None().into_bound(py));
                }
                Err(err)
            }
        }
    }

    /// Runs `handed` (a Python coroutine) in the call's place from now on.
    fn hand_to(&mut self, handed: Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<Step> {
        let handed = awaited(handed)?;
        let stepped = send_into(&handed, value);
        if let Ok(Step::Yielded(_)) = stepped {
            self.state = State::Handed(handed.unbind());
        }
        stepped
    }

    fn kwargs(&self, py: Python<'_>) -> Option<Py<PyDict>> {
        self.kwargs.as_ref().map(|k| k.clone_ref(py))
    }

    /// An admitted call left unfinished (closed, cleared or dropped): its deadline is
    /// done, its slot and a trial's permit given back.
    fn abandon(&mut self, py: Python<'_>) {
        if let State::Running(running) = std::mem::replace(&mut self.state, State::Done) {
            if let Some(entry) = &running.deadline {
                // Marked done in place (the deadlines' _DONE), so that its timer never
                // cancels a task that has moved on: no Python code runs here.
                let _ = entry.bind(py).set_item(2, 1);
            }
            running
                .owner
                .get()
                .guard
                .get()
                .abandoned(py, running.ticket);
        }
    }
}

/// The StopIteration ending a `send` or `throw` whose call returned `value`, made as a
/// coroutine's own is (an instance, rather than a lazy error: no allocation beyond it).
#[inline]
fn stop_iteration(py: Python<'_>, value: Py<PyAny>) -> PyErr {
    // SAFETY: StopIteration is a live type object and `value` a live object; a new
    // reference is returned, or NULL with an exception set.
    let made = unsafe { ffi::PyObject_CallOneArg(ffi::PyExc_StopIteration, value.as_ptr()) };
    if made.is_null() {
        return PyErr::fetch(py);
    }
    PyErr::from_value(unsafe { Bound::from_owned_ptr(py, made) })
}

/// What a step of the call is given.
enum Input<'a, 'py> {
    Send(&'a Bound<'py, PyAny>),
    Throw(&'a Bound<'py, PyTuple>),
}

#[pymethods]
impl GuardedCall {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// A step with None (how a task steps it): a return needs no StopIteration object.
    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match self.step(py, Input::Send(&py.None().into_bound(py)))? {
            Step::Yielded(yielded) => Ok(Some(yielded)),
            Step::Returned(value) if value.is_none(py) => Ok(None),
            Step::Returned(value) => Err(stop_iteration(py, value)),
        }
    }

    #[pyo3(signature = (*args))]
    fn throw(&mut self, py: Python<'_>, args: Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
        match self.step(py, Input::Throw(&args))? {
            Step::Yielded(yielded) => Ok(yielded),
            Step::Returned(value) => Err(stop_iteration(py, value)),
        }
    }

    /// Closes the function's coroutine (or the one run in its place); an admitted call
    /// ends with no outcome, as one interrupted by GeneratorExit.
    fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Running(running) => {
                let closed = running.coroutine.bind(py).call_method0("close");
                self.state = State::Running(running);
                self.abandon(py);
                closed.map(|_| ())
            }
            State::Handed(coroutine) => coroutine.bind(py).call_method0("close").map(|_| ()),
            State::New(_) | State::Done => Ok(()),
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.args)?;
        visit.call(&self.kwargs)?;
        match &self.state {
            State::New(owner) => visit.call(owner)?,
            State::Running(running) => {
                visit.call(&running.owner)?;
                visit.call(&running.coroutine)?;
                visit.call(&running.deadline)?;
            }
            State::Handed(coroutine) => visit.call(coroutine)?,
            State::Done => {}
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        Python::attach(|py| self.abandon(py));
        self.state = State::Done;
    }
}

impl Drop for GuardedCall {
    fn drop(&mut self) {
        if matches!(self.state, State::Running(_)) {
            Python::attach(|py| self.abandon(py));
        }
    }
}
