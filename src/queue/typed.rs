//! Typed messages (design.md §6.9): plain-old-data values sent as their
//! bytes and read back checked, through `zerocopy`'s traits; and serde
//! values in postcard's format (feature `serde`).
//!
//! A message that is not a value of the type asked for (a wrong length, a
//! misaligned buffer, bytes that do not decode) is an error that gives the
//! message back whole, never undefined behaviour or a panic.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::ptr::NonNull;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::error::{RecvError, SendError};
use super::{OwnedMessage, Receiver, Sender};

/// Why a message is not a value of the type asked for.
#[derive(Debug)]
#[non_exhaustive]
pub enum Invalid {
    /// Its length does not fit the type: not its size (a sized type), or
    /// not a whole number of elements (a slice type).
    Size {
        /// The message's length in bytes.
        len: usize,
        /// The type asked for.
        type_name: &'static str,
    },
    /// Its bytes are not aligned for the type. A message up to
    /// [`Queue::max_message`](crate::Queue::max_message) is read in place,
    /// 64-byte aligned; a larger one is received into a heap buffer,
    /// aligned only as the allocator aligns a `Vec<u8>` (16 on x86-64).
    Alignment {
        /// The alignment the message's bytes have (the largest power of
        /// two dividing their address).
        has: usize,
        /// The type asked for.
        type_name: &'static str,
    },
    /// It does not decode as the type (feature `serde`).
    #[cfg(feature = "serde")]
    Decode(postcard::Error),
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Size { len, type_name } => {
                write!(f, "a {len}-byte message is not a {type_name} (wrong size)")
            }
            Self::Alignment { has, type_name } => write!(
                f,
                "the message's bytes are aligned to {has} bytes, too few for a {type_name}"
            ),
            #[cfg(feature = "serde")]
            Self::Decode(e) => write!(f, "the message does not decode: {e}"),
        }
    }
}

impl std::error::Error for Invalid {}

/// Error of a typed receive ([`Receiver::recv_value`],
/// [`Receiver::recv_ref`], [`Receiver::recv_serde`]).
#[non_exhaustive]
pub enum RecvValueError {
    /// The receive itself failed.
    Recv(RecvError),
    /// The message is not a value of the type asked for; here it is, whole
    /// (its space in the queue is released when it is dropped).
    Invalid(Box<OwnedMessage>, Invalid),
}

impl RecvValueError {
    /// Whether the queue is empty and every sender is gone.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Self::Recv(RecvError::Disconnected))
    }
}

impl fmt::Debug for RecvValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Recv(e) => f.debug_tuple("Recv").field(e).finish(),
            Self::Invalid(m, why) => f.debug_tuple("Invalid").field(m).field(why).finish(),
        }
    }
}

impl fmt::Display for RecvValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Recv(e) => e.fmt(f),
            Self::Invalid(_, why) => why.fmt(f),
        }
    }
}

impl std::error::Error for RecvValueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Recv(e) => Some(e),
            Self::Invalid(_, why) => Some(why),
        }
    }
}

impl From<RecvError> for RecvValueError {
    fn from(e: RecvError) -> Self {
        Self::Recv(e)
    }
}

impl Sender {
    /// Sends `value` as its bytes: a plain-old-data type (`zerocopy`'s
    /// [`IntoBytes`] and [`Immutable`], derivable), or a slice of one.
    /// The receiver reads it back with [`Receiver::recv_value`] or, in
    /// place, [`Receiver::recv_ref`].
    ///
    /// ```
    /// use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
    ///
    /// #[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Debug, PartialEq)]
    /// #[repr(C)]
    /// struct Tick { seq: u64, price: f64 }
    ///
    /// # let name = format!("shmq-doc-send-value-{}", std::process::id());
    /// let q = shmq::Queue::create(&name, shmq::Config::default().capacity_bytes(1 << 20))?;
    /// # shmq::Queue::unlink(&name)?;
    /// let (tx, rx) = (q.sender()?, q.receiver()?);
    /// tx.send_value(&Tick { seq: 1, price: 99.5 })?;
    /// tx.send_value(&[1.0f32, 2.0, 3.0][..])?;
    /// assert_eq!(rx.recv_value::<Tick>()?, Tick { seq: 1, price: 99.5 });
    /// assert_eq!(&*rx.recv_ref::<[f32]>()?, &[1.0, 2.0, 3.0]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`send`](Self::send), giving the value back.
    pub fn send_value<'v, T>(&self, value: &'v T) -> Result<(), SendError<&'v T>>
    where
        T: IntoBytes + Immutable + ?Sized,
    {
        self.send(value.as_bytes())
            .map_err(|e| e.map_message(|_| value))
    }
}

impl Receiver {
    /// Receives the next message as a `T` (copied out, so any alignment
    /// works), waiting as long as it takes.
    ///
    /// # Errors
    /// [`RecvValueError::Recv`] as [`recv`](Self::recv);
    /// [`RecvValueError::Invalid`], with the message, if its length is not
    /// `size_of::<T>()`.
    pub fn recv_value<T: FromBytes>(&self) -> Result<T, RecvValueError> {
        let m = self.recv_owned()?;
        match m.value::<T>() {
            Ok(v) => Ok(v),
            Err(why) => Err(RecvValueError::Invalid(Box::new(m), why)),
        }
    }

    /// Receives the next message as a `T` read in place, without copying:
    /// a sized type or a slice type (`[f32]`, or a struct whose last field
    /// is a slice), checked for size and alignment. The [`ValueRef`] pins
    /// the message's space until dropped, as an [`OwnedMessage`] does.
    ///
    /// # Errors
    /// As [`recv_value`](Self::recv_value); also
    /// [`Invalid::Alignment`] for a type aligned to more than 64 bytes, or
    /// a streamed message (above `max_message`) whose heap buffer is less
    /// aligned than the type.
    pub fn recv_ref<T>(&self) -> Result<ValueRef<T>, RecvValueError>
    where
        T: FromBytes + KnownLayout + Immutable + ?Sized,
    {
        ValueRef::new(self.recv_owned()?)
    }
}

impl OwnedMessage {
    /// The message as a `T`, copied out (any alignment).
    ///
    /// # Errors
    /// [`Invalid::Size`] if its length is not `size_of::<T>()`.
    pub fn value<T: FromBytes>(&self) -> Result<T, Invalid> {
        T::read_from_bytes(self).map_err(|_| Invalid::Size {
            len: self.len(),
            type_name: std::any::type_name::<T>(),
        })
    }

    /// The message as a `&T`, in place (see [`Receiver::recv_ref`]).
    ///
    /// # Errors
    /// [`Invalid::Size`] or [`Invalid::Alignment`].
    pub fn value_ref<T>(&self) -> Result<&T, Invalid>
    where
        T: FromBytes + KnownLayout + Immutable + ?Sized,
    {
        T::ref_from_bytes(self).map_err(|e| cast_error::<T>(self, &e))
    }
}

/// Our word for a failed `zerocopy` cast of `bytes` to a `T`.
fn cast_error<T: ?Sized + KnownLayout>(bytes: &[u8], e: &zerocopy::CastError<&[u8], T>) -> Invalid {
    let type_name = std::any::type_name::<T>();
    let len = bytes.len();
    match e {
        zerocopy::ConvertError::Alignment(_) => Invalid::Alignment {
            has: 1 << (bytes.as_ptr() as usize).trailing_zeros().min(63),
            type_name,
        },
        zerocopy::ConvertError::Size(_) | zerocopy::ConvertError::Validity(_) => {
            Invalid::Size { len, type_name }
        }
    }
}

/// A message read in place as a `T`: from [`Receiver::recv_ref`].
/// Dereferences to `&T`; the message's space is released when it is
/// dropped.
pub struct ValueRef<T: ?Sized> {
    /// Into `msg`'s bytes, checked for size and alignment at creation.
    value: NonNull<T>,
    msg: OwnedMessage,
    _t: PhantomData<fn() -> T>,
}

// SAFETY: a `ValueRef` is an `OwnedMessage` (Send, Sync) and a pointer into
// its bytes, which only ever give out `&T` (`T: Immutable`).
unsafe impl<T: ?Sized + Sync> Send for ValueRef<T> {}
// SAFETY: as for `Send`: shared access gives `&T` only.
unsafe impl<T: ?Sized + Sync> Sync for ValueRef<T> {}

impl<T> ValueRef<T>
where
    T: FromBytes + KnownLayout + Immutable + ?Sized,
{
    fn new(msg: OwnedMessage) -> Result<Self, RecvValueError> {
        let value = match msg.value_ref::<T>() {
            Ok(v) => NonNull::from(v),
            Err(why) => return Err(RecvValueError::Invalid(Box::new(msg), why)),
        };
        Ok(Self {
            value,
            msg,
            _t: PhantomData,
        })
    }

    /// The message itself (its bytes).
    pub fn message(&self) -> &OwnedMessage {
        &self.msg
    }
}

impl<T: ?Sized> Deref for ValueRef<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: `value` points into `msg`'s bytes, checked for size and
        // alignment when it was made; `msg` keeps them claimed (nobody
        // writes them) and mapped until it drops with `self`.
        unsafe { self.value.as_ref() }
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for ValueRef<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ValueRef").field(&&**self).finish()
    }
}

#[cfg(feature = "serde")]
mod serde_values {
    use serde::Serialize;
    use serde::de::{Deserialize, DeserializeOwned};

    use super::{Invalid, OwnedMessage, Receiver, RecvValueError, Sender, fmt};
    use crate::queue::error::SendError;

    /// Error of [`Sender::send_serde`].
    #[derive(Debug)]
    #[non_exhaustive]
    pub enum SendSerdeError {
        /// The value did not serialize (a serde error of the value's own
        /// `Serialize`); nothing was sent.
        Encode(postcard::Error),
        /// The send failed, as [`Sender::send`] does.
        Send(SendError<()>),
        /// The value serialized to a different length the second time
        /// (it changed while being sent, through interior mutability);
        /// nothing was sent.
        Changed {
            /// Bytes of the first pass (sizing).
            sized: usize,
            /// Bytes of the second (writing).
            written: usize,
        },
    }

    impl fmt::Display for SendSerdeError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Self::Encode(e) => write!(f, "the value does not serialize: {e}"),
                Self::Send(e) => e.fmt(f),
                Self::Changed { sized, written } => write!(
                    f,
                    "the value serialized to {sized} bytes, then to {written}: it changed while \
                     being sent; nothing was sent"
                ),
            }
        }
    }

    impl std::error::Error for SendSerdeError {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            match self {
                Self::Encode(e) => Some(e),
                Self::Send(e) => Some(e),
                Self::Changed { .. } => None,
            }
        }
    }

    impl Sender {
        /// Sends `value` serialized with serde in postcard's compact format
        /// (feature `serde`), written in place in the queue. Read it back
        /// with [`Receiver::recv_serde`] or
        /// [`OwnedMessage::deserialize`].
        ///
        /// ```
        /// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
        /// struct Step { actor: u32, reward: f32, obs: Vec<f32> }
        ///
        /// # let name = format!("shmq-doc-send-serde-{}", std::process::id());
        /// let q = shmq::Queue::create(&name, shmq::Config::default().capacity_bytes(1 << 20))?;
        /// # shmq::Queue::unlink(&name)?;
        /// let (tx, rx) = (q.sender()?, q.receiver()?);
        /// let step = Step { actor: 3, reward: 0.5, obs: vec![0.1, 0.2] };
        /// tx.send_serde(&step)?;
        /// assert_eq!(rx.recv_serde::<Step>()?, step);
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        ///
        /// # Errors
        /// [`SendSerdeError::Encode`] if the value does not serialize;
        /// [`SendSerdeError::Send`] as [`send`](Self::send).
        pub fn send_serde<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), SendSerdeError> {
            let len =
                postcard::experimental::serialized_size(value).map_err(SendSerdeError::Encode)?;
            if len > self.max_message() {
                // a large message is streamed from a buffer of its own
                let bytes = postcard::to_stdvec(value).map_err(SendSerdeError::Encode)?;
                return self
                    .send(&bytes)
                    .map_err(|e| SendSerdeError::Send(e.without_message()));
            }
            let mut g = self
                .reserve(len)
                .map_err(|e| SendSerdeError::Send(e.without_message()))?;
            // a `Serialize` that writes more the second time fails here,
            // and one that writes less is caught below: the grant is then
            // dropped unsent (never published with stale bytes in it)
            let written = postcard::to_slice(value, &mut g)
                .map_err(SendSerdeError::Encode)?
                .len();
            if written != len {
                return Err(SendSerdeError::Changed {
                    sized: len,
                    written,
                });
            }
            g.commit().map_err(SendSerdeError::Send)
        }
    }

    impl Receiver {
        /// Receives the next message as a serde value in postcard's format
        /// (feature `serde`), waiting as long as it takes.
        ///
        /// # Errors
        /// [`RecvValueError::Recv`] as [`recv`](Self::recv);
        /// [`RecvValueError::Invalid`] with [`Invalid::Decode`], and the
        /// message, if it does not decode as a `T`.
        pub fn recv_serde<T: DeserializeOwned>(&self) -> Result<T, RecvValueError> {
            let m = self.recv_owned()?;
            match m.deserialize::<T>() {
                Ok(v) => Ok(v),
                Err(why) => Err(RecvValueError::Invalid(Box::new(m), why)),
            }
        }
    }

    impl OwnedMessage {
        /// The message as a serde value in postcard's format (feature
        /// `serde`). It may borrow from the message (`&str`, `&[u8]`
        /// fields), read in place.
        ///
        /// # Errors
        /// [`Invalid::Decode`] if it does not decode as a `T`, or has bytes
        /// left over after one.
        pub fn deserialize<'de, T: Deserialize<'de>>(&'de self) -> Result<T, Invalid> {
            match postcard::take_from_bytes::<T>(self) {
                Ok((v, [])) => Ok(v),
                // a `T` followed by more: not a `T`
                Ok(_) => Err(Invalid::Size {
                    len: self.len(),
                    type_name: std::any::type_name::<T>(),
                }),
                Err(e) => Err(Invalid::Decode(e)),
            }
        }
    }
}

#[cfg(feature = "serde")]
pub use serde_values::SendSerdeError;
