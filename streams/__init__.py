"""Kafka-facing side: the worker, its codecs and sinks' feeding. Importing it installs the
compiled Avro readers (``compiled_readers``) before any codec is built."""

from tripwire.streams import compiled_readers as compiled_readers
