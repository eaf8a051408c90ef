"""Ctrl-C and SIGTERM held while something must finish: a kernel call whose rows are to be
recorded, a result file being finished and named."""

import signal
import threading


class HeldSignals:
    """Holds Ctrl-C (SIGINT), and SIGTERM where the program handles it, until what runs
    inside has finished (the kernel call in flight, whose rows are then recorded; a file
    being finished and named); :meth:`deliver` then passes the signal on to its handler.
    Only the main thread receives signals; elsewhere this does nothing."""

    def __enter__(self):
        self.signum, self.handlers, self.holding = 0, {}, False
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            handler = signal.getsignal(sig)
            if callable(handler):  # a Python handler (SIGINT's raises KeyboardInterrupt)
                self.handlers[sig] = signal.signal(sig, self._hold)
        self.holding = True
        return self

    def _hold(self, signum, frame):
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    def deliver(self):
        """Restore the handlers (where still held) and pass a held signal on to its own;
        also after the ``with`` block, so that a signal held there goes on where its
        caller is ready to clean up."""
        self.__exit__()
        if not self.signum:
            return
        handler = self.handlers.get(self.signum)
        if handler is not None:
            handler(self.signum, None)
        raise KeyboardInterrupt(self.name)

    def __exit__(self, *exc):
        if self.holding:
            for sig, handler in self.handlers.items():
                signal.signal(sig, handler)
            self.holding = False
