"""The reference receiver (backend side): verify, dedup, store, ack."""

from cimedge.cloud_sync.receiver.registry import EnrollmentError, Registry, RegistryError, open_registry
from cimedge.cloud_sync.receiver.service import Receiver
from cimedge.cloud_sync.receiver.store import Refusal, SqliteStore, Store, StoreThread, open_store

__all__ = ["EnrollmentError", "Receiver", "Refusal", "Registry", "RegistryError", "SqliteStore",
           "Store", "StoreThread", "open_registry", "open_store"]
