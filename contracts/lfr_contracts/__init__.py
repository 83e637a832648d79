"""What every side of lfr-edge agrees on: wire formats, message types, topic names, a unit's file layout.

Pure encode/decode and types only: no sockets, files, threads or clocks beyond a time passed in. It imports
nothing else of the project, and everything else may import it.
"""
