---------------------------- MODULE LockService ----------------------------
(***************************************************************************)
(* The lock service on the managers (DESIGN.md section 7): sessions with a *)
(* TTL, Acquire returning a fencing token, Release, expiry of a session    *)
(* freeing its locks, FIFO waiters, and a storage server that remembers    *)
(* the highest token it has accepted per lock and rejects lower ones.      *)
(*                                                                         *)
(* What is modelled:                                                       *)
(*  - The replicated lock-service state (what the managers' Raft log       *)
(*    commits): sessions and their expiry tick, per lock the holder, the   *)
(*    FIFO of waiters and the token counter.  A grant is proposed by the   *)
(*    leader (the counter is bumped in the proposal) and answered to the   *)
(*    client only once committed.                                          *)
(*  - Leader failover: the new leader keeps the committed state; proposals *)
(*    not committed are lost (the client got no answer).  It extends every *)
(*    live session by the TTL (it cannot know when the old leader last     *)
(*    heard a keep-alive).                                                 *)
(*  - Time is a global tick (Tick); a session whose expiry tick has come   *)
(*    expires at the leader (Expire): its locks pass to the next waiter    *)
(*    (with a new token) or become free, and it leaves every queue.        *)
(*  - Clients keep the token they were granted until they release or       *)
(*    learn of the expiry: a client whose session expired behind its back  *)
(*    is a STALE holder and may still write with its old token.            *)
(*  - The storage server: Write(lock, token) is accepted iff token >= the  *)
(*    highest token it has accepted for that lock (then recorded).         *)
(*                                                                         *)
(* Abstracted: the Raft log itself (a commit is one step; Raft.tla is to   *)
(* model it), message delays other than the stale client's, clock skew    *)
(* (one global tick; the session TTL at the client is assumed to be       *)
(* measured conservatively), keep-alive batching, lock modes.             *)
(*                                                                         *)
(* Switch: ReplyBeforeCommit (FALSE in LockService.cfg): the leader        *)
(* answers a grant before it is committed; a failover then re-issues the   *)
(* same token (tla/findings/LockService_reply_before_commit.cfg).          *)
(***************************************************************************)
EXTENDS Naturals, Sequences, FiniteSets

CONSTANTS Clients, Locks, TTL, MaxTick, MaxToken, MaxFailover, ReplyBeforeCommit

None == "none"

VARIABLES
    now,        \* the global tick
    expiry,     \* expiry[c]: tick at which c's session expires (0: no session)
    holder,     \* holder[l]: committed holder (None: free)
    waiters,    \* waiters[l]: FIFO of clients waiting
    counter,    \* counter[l]: last token issued (replicated)
    pending,    \* pending[l]: proposed grant <<client, token>> not yet committed, or <<>>
    failovers,
    ctok,       \* ctok[c][l]: token client c believes it holds (0: none)
    srvMax,     \* srvMax[l]: highest token the storage server accepted
    accepted    \* history: <<l, token, client>> writes the server accepted

vars == <<now, expiry, holder, waiters, counter, pending, failovers, ctok, srvMax, accepted>>

Alive(c) == expiry[c] > now
InQueue(c, l) == \E i \in 1..Len(waiters[l]) : waiters[l][i] = c
Remove(s, c) == SelectSeq(s, LAMBDA x : x # c)

TypeOK ==
    /\ now \in 0..MaxTick /\ expiry \in [Clients -> 0..(MaxTick + 2 * TTL)]
    /\ holder \in [Locks -> Clients \cup {None}]
    /\ waiters \in [Locks -> Seq(Clients)]
    /\ counter \in [Locks -> 0..MaxToken]
    /\ pending \in [Locks -> {<<>>} \cup (Clients \X (1..MaxToken))]
    /\ failovers \in 0..MaxFailover
    /\ ctok \in [Clients -> [Locks -> 0..MaxToken]]
    /\ srvMax \in [Locks -> 0..MaxToken]
    /\ accepted \subseteq Locks \X (1..MaxToken) \X Clients

Init ==
    /\ now = 0 /\ expiry = [c \in Clients |-> 0]
    /\ holder = [l \in Locks |-> None] /\ waiters = [l \in Locks |-> << >>]
    /\ counter = [l \in Locks |-> 0] /\ pending = [l \in Locks |-> <<>>]
    /\ failovers = 0
    /\ ctok = [c \in Clients |-> [l \in Locks |-> 0]]
    /\ srvMax = [l \in Locks |-> 0] /\ accepted = {}

Tick ==
    /\ now < MaxTick /\ now' = now + 1
    /\ UNCHANGED <<expiry, holder, waiters, counter, pending, failovers, ctok, srvMax, accepted>>

\* OpenSession / KeepAlive: the leader sets the session's expiry to now + TTL.
KeepAlive(c) ==
    /\ expiry[c] = 0 \/ Alive(c)
    /\ expiry' = [expiry EXCEPT ![c] = now + TTL]
    /\ UNCHANGED <<now, holder, waiters, counter, pending, failovers, ctok, srvMax, accepted>>

\* Acquire of a free lock with nobody waiting: the leader proposes to grant it
\* to c with the next token.  [ReplyBeforeCommit] c is answered already.
Propose(l, c) ==
    /\ pending[l] = <<>> /\ counter[l] < MaxToken
    /\ Alive(c) /\ holder[l] = None /\ waiters[l] = << >> /\ ctok[c][l] = 0
    /\ pending' = [pending EXCEPT ![l] = <<c, counter[l] + 1>>]
    /\ counter' = [counter EXCEPT ![l] = @ + 1]
    /\ ctok' = IF ReplyBeforeCommit THEN [ctok EXCEPT ![c][l] = counter[l] + 1] ELSE ctok
    /\ UNCHANGED <<now, expiry, holder, waiters, failovers, srvMax, accepted>>

\* Acquire of a lock that is held or being granted: c joins the FIFO.
Enqueue(l, c) ==
    /\ Alive(c) /\ ctok[c][l] = 0 /\ ~InQueue(c, l)
    /\ holder[l] \notin {None, c}
       \/ (pending[l] # <<>> /\ pending[l][1] # c)
    /\ waiters' = [waiters EXCEPT ![l] = Append(@, c)]
    /\ UNCHANGED <<now, expiry, holder, counter, pending, failovers, ctok, srvMax, accepted>>

\* The lock is free and clients wait: grant it to the head of the FIFO.
GrantHead(l) ==
    /\ holder[l] = None /\ pending[l] = <<>> /\ waiters[l] # << >>
    /\ counter[l] < MaxToken
    /\ pending' = [pending EXCEPT ![l] = <<Head(waiters[l]), counter[l] + 1>>]
    /\ counter' = [counter EXCEPT ![l] = @ + 1]
    /\ waiters' = [waiters EXCEPT ![l] = Tail(@)]
    /\ ctok' = IF ReplyBeforeCommit THEN [ctok EXCEPT ![Head(waiters[l])][l] = counter[l] + 1]
              ELSE ctok
    /\ UNCHANGED <<now, expiry, holder, failovers, srvMax, accepted>>

\* The proposal is committed: c holds l and is answered with the token.
Commit(l) ==
    /\ pending[l] # <<>>
    /\ LET c == pending[l][1]
           t == pending[l][2]
       IN /\ holder' = [holder EXCEPT ![l] = c]
          /\ ctok' = [ctok EXCEPT ![c][l] = t]
    /\ pending' = [pending EXCEPT ![l] = <<>>]
    /\ UNCHANGED <<now, expiry, waiters, counter, failovers, srvMax, accepted>>

\* Release by the holder: the lock is free (GrantHead passes it on).
Release(l, c) ==
    /\ holder[l] = c /\ Alive(c) /\ ctok[c][l] # 0
    /\ holder' = [holder EXCEPT ![l] = None]
    /\ ctok' = [ctok EXCEPT ![c][l] = 0]
    /\ UNCHANGED <<now, expiry, waiters, counter, pending, failovers, srvMax, accepted>>

\* The leader expires c's session for lock l: if c holds l, l is free (and
\* GrantHead passes it on); c leaves l's FIFO.  The client is not told: it
\* keeps its token (a STALE holder) until it notices (Forget).
Expire(c, l) ==
    /\ expiry[c] # 0 /\ ~Alive(c)
    /\ holder[l] = c \/ InQueue(c, l)
    /\ holder' = [holder EXCEPT ![l] = IF @ = c THEN None ELSE @]
    /\ waiters' = [waiters EXCEPT ![l] = Remove(@, c)]
    /\ UNCHANGED <<now, expiry, counter, pending, failovers, ctok, srvMax, accepted>>

\* A client whose session is gone drops its tokens (it noticed the expiry).
Forget(c) ==
    /\ ~Alive(c) /\ \E l \in Locks : ctok[c][l] # 0
    /\ ctok' = [ctok EXCEPT ![c] = [l \in Locks |-> 0]]
    /\ UNCHANGED <<now, expiry, holder, waiters, counter, pending, failovers, srvMax, accepted>>

\* Leader failover.  The committed state survives, including every token
\* counter as of the last committed grant; an uncommitted proposal (and its
\* bump of the counter) is lost.  Its grantee, if its session is live, is
\* put back at the head of the FIFO (it is still waiting for an answer).
\* The new leader extends every live session by the TTL.
Failover ==
    /\ failovers < MaxFailover
    /\ failovers' = failovers + 1
    /\ pending' = [l \in Locks |-> <<>>]
    /\ counter' = [l \in Locks |-> IF pending[l] # <<>> THEN counter[l] - 1 ELSE counter[l]]
    /\ waiters' = [l \in Locks |-> IF pending[l] # <<>> /\ Alive(pending[l][1])
                                    THEN <<pending[l][1]>> \o waiters[l] ELSE waiters[l]]
    /\ expiry' = [c \in Clients |-> IF Alive(c) THEN now + TTL ELSE expiry[c]]
    /\ UNCHANGED <<now, holder, ctok, srvMax, accepted>>

\* A client writes to the storage server with the token it believes it holds
\* (a stale holder too): accepted iff not below the highest accepted token.
Write(c, l) ==
    /\ ctok[c][l] # 0
    /\ ctok[c][l] >= srvMax[l]
    /\ srvMax' = [srvMax EXCEPT ![l] = ctok[c][l]]
    /\ accepted' = accepted \cup {<<l, ctok[c][l], c>>}
    /\ UNCHANGED <<now, expiry, holder, waiters, counter, pending, failovers, ctok>>

\* ... and rejected (nothing changes: a stuttering step, not written out) if
\* its token is below srvMax[l].

Next ==
    \/ Tick \/ Failover
    \/ \E c \in Clients : KeepAlive(c) \/ Forget(c)
    \/ \E l \in Locks : Commit(l) \/ GrantHead(l)
    \/ \E l \in Locks, c \in Clients :
         Propose(l, c) \/ Enqueue(l, c) \/ Release(l, c) \/ Expire(c, l) \/ Write(c, l)

Spec == Init /\ [][Next]_vars
\* Commits, hand-overs and expiries are weakly fair; clients, time and failovers not.
FairSpec == /\ Spec
            /\ \A l \in Locks : WF_vars(Commit(l)) /\ WF_vars(GrantHead(l))
            /\ \A c \in Clients, k \in Locks : WF_vars(Expire(c, k))

(***************************************************************************)
(* Properties                                                              *)
(***************************************************************************)

\* At most one holder per lock from the lock service's view, and no two
\* clients ever believe they hold the same token of a lock.
OneHolderPerToken ==
    /\ \A l \in Locks : holder[l] # None => pending[l] = <<>> \/ pending[l][1] # holder[l]
    /\ \A l \in Locks, c, d \in Clients :
          c # d /\ ctok[c][l] # 0 => ctok[c][l] # ctok[d][l]

\* Tokens strictly increase per lock: a new proposal's token is above every
\* token any client holds or the server has accepted (action property).
TokensIncrease ==
    [][\A l \in Locks : pending'[l] # <<>> /\ pending[l] = <<>> =>
          /\ \A c \in Clients : pending'[l][2] > ctok[c][l]
          /\ pending'[l][2] > srvMax[l]]_vars

\* The server never accepts a token lower than one it accepted, and never the
\* same token from two clients (so a stale holder's write is rejected once
\* the next holder has written).
ServerFenced ==
    /\ [][\A l \in Locks : srvMax'[l] >= srvMax[l]]_vars
    /\ [][\A a \in accepted' \ accepted, b \in accepted :
            a[1] = b[1] => a[2] >= b[2]]_vars

OneClientPerToken ==
    \A a, b \in accepted : a[1] = b[1] /\ a[2] = b[2] => a[3] = b[3]

\* An expired session's lock eventually becomes free of it.
ExpiredLockFreed ==
    \A c \in Clients, l \in Locks :
        (holder[l] = c /\ ~Alive(c) /\ expiry[c] # 0) ~> (holder[l] # c)
=============================================================================
