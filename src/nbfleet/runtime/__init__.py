"""Runtimes turn a notebook instance into something running. The reconciler is their only caller."""
