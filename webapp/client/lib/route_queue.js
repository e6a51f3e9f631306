// Routing requests, one at a time: at most one is in flight, and the latest decision wins.
//
// An answer asks with its own numbers (prompt tokens, max_tokens); the client also asks without any
// (on connect, after a load, when a setting changes). A request made while another is in flight waits;
// requests without numbers that wait together are asked once (they want the same thing: a fresh
// decision), and one without numbers waiting behind an answer's joins it. Replies come back in the
// order they were asked, and a reply is kept as the latest decision only if it is newer than the one
// kept, so a late reply can never overwrite a newer decision.
//
// Pure: `ask(numbers)` does the asking, so node tests the ordering (tests/js/route_queue.test.mjs).

export class RouteQueue {
  // `ask(numbers)` returns a promise of a decision; `onDecision(decision)` hears each one kept.
  constructor(ask, onDecision = () => {}) {
    this.ask = ask;
    this.onDecision = onDecision;
    this.waiting = [];
    this.inFlight = null;
    this.issued = 0;
    this.keptSeq = 0;
    this.latest = null;
  }

  request(numbers = null) {
    const last = this.waiting[this.waiting.length - 1];
    if (last && (!numbers || !last.numbers)) {  // a fresh decision is already wanted: share it
      if (numbers) last.numbers = numbers;
      return last.promise;
    }
    const entry = { numbers, seq: ++this.issued };
    entry.promise = new Promise((resolve, reject) => Object.assign(entry, { resolve, reject }));
    this.waiting.push(entry);
    this.next();
    return entry.promise;
  }

  async next() {
    if (this.inFlight || !this.waiting.length) return;
    const entry = (this.inFlight = this.waiting.shift());
    try {
      const decision = await this.ask(entry.numbers);
      if (entry.seq > this.keptSeq) {
        this.keptSeq = entry.seq;
        this.latest = decision;
        this.onDecision(decision);
      }
      entry.resolve(decision);
    } catch (error) {
      entry.reject(error);
    } finally {
      this.inFlight = null;
      this.next();
    }
  }
}
