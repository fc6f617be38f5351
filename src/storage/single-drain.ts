/**
 * One drain of a queue at a time per process. A call while a drain runs asks it to go round once more (an
 * entry may have arrived after it last looked) and shares its promise; `settled` is what shutdown awaits.
 * The logout queue and the mail queue drain this way, on a publish, after a reconnect and on a timer.
 */
export function singleDrain(round: () => Promise<void>, stopped: () => boolean): { drain: () => Promise<void>; settled: () => Promise<void> } {
  let running: Promise<void> | undefined;
  let again = false;
  return {
    drain: () => {
      if (running) {
        again = true;
        return running;
      }
      running = (async () => {
        do {
          again = false;
          await round();
        } while (again && !stopped());
      })().finally(() => {
        running = undefined;
      });
      return running;
    },
    settled: () => running ?? Promise.resolve(),
  };
}
