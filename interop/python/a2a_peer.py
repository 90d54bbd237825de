"""The official Python A2A SDK (a2a-sdk) as a peer of Weave, over mTLS with SVIDs
from Weave's dev CA. Test code only; the interop suite runs it from .infra/venv.

  a2a_peer.py client --url URL --expect-id SPIFFE_ID --cert C --key K --ca CA --binding B
                     [--grpc-expect-id SPIFFE_ID]
      Runs send, stream, get, list, cancel and subscribe against a Weave agent
      (skills "echo" and "slow") and prints one JSON line per step.
  a2a_peer.py server --cert C --key K --ca CA --binding B --allow-id SPIFFE_ID...
      Serves an A2A agent requiring a client certificate: JSONRPC and HTTP+JSON
      with uvicorn; GRPC with grpcio (require_client_auth), its card still
      served by uvicorn. A caller whose SPIFFE ID is not allowed gets only the
      card. Prints {"type":"listening","url":...} and then one JSON line per
      request received, refused, and executed.

Python's ssl verifies the chain against the CA file, but it only checks DNS/IP
names; the SPIFFE ID (URI SAN) of the peer is checked here on every response.
grpcio's channel TLS can only match a DNS name (target name override) and
SVIDs carry a URI SAN only, so on GRPC the client's TLS is Python's ssl too:
see SpiffeRelay.
"""

import argparse
import asyncio
import json
import os
import socket
import ssl
import sys
import tempfile
import uuid

import grpc
import httpx
import uvicorn
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler, GrpcHandler
from a2a.server.request_handlers.grpc_handler import DefaultGrpcServerCallContextBuilder
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes, create_rest_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    SubscribeToTaskRequest,
    Task,
    TaskState,
    a2a_pb2_grpc,
)


def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def state_name(state: int) -> str:
    return TaskState.Name(state)


# ---------------------------------------------------------------- client


def spiffe_id_of_cert(cert: dict | None) -> str | None:
    """The SPIFFE ID of a certificate verified by Python's ssl: its one URI SAN."""
    uris = [v for (k, v) in (cert or {}).get('subjectAltName', ()) if k == 'URI']
    return uris[0] if len(uris) == 1 else None


def spiffe_id_of(response: httpx.Response) -> str | None:
    stream = response.extensions.get('network_stream')
    ssl_object = stream.get_extra_info('ssl_object') if stream else None
    return spiffe_id_of_cert(ssl_object.getpeercert() if ssl_object else None)


def client_tls(args, alpn: list[str] | None = None) -> ssl.SSLContext:
    """The client's mTLS: its SVID, the CA as the only trust anchor, chain verification required."""
    tls = ssl.create_default_context(cafile=args.ca)
    tls.load_cert_chain(args.cert, args.key)
    tls.check_hostname = False  # SVIDs carry a URI SAN only; the SPIFFE ID is checked by the caller
    tls.verify_mode = ssl.CERT_REQUIRED
    if alpn:
        tls.set_alpn_protocols(alpn)
    return tls


class SpiffeRelay:
    """mTLS with a SPIFFE-ID check for a grpcio channel, on the connection the channel uses.

    grpcio's TLS verifies the chain but matches the server's name against DNS
    SANs only (grpc.ssl_target_name_override), and exposes no hook to check a
    URI SAN before a call is sent. So the channel speaks plain HTTP/2 to this
    relay, over a unix socket in a private (0700) directory of this process,
    and each connection it opens is carried over its own TLS connection made
    with Python's ssl: the client's SVID, the chain verified against the CA,
    ALPN h2, and the server's URI SAN compared with the expected SPIFFE ID
    after the handshake and before a single byte of the channel is forwarded.
    A server with another ID gets nothing and the refusal is recorded.
    """

    def __init__(self, host: str, port: int, tls: ssl.SSLContext, expect_id: str):
        self.host, self.port, self.tls, self.expect_id = host, port, tls, expect_id
        self.verified: list[str] = []
        self.refusals: list[str] = []
        self._dir = tempfile.mkdtemp(prefix='a2a-relay-')  # mkdtemp: mode 0700
        self.path = os.path.join(self._dir, 'grpc.sock')
        self._server: asyncio.Server | None = None

    @property
    def target(self) -> str:
        return f'unix:{self.path}'

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._carry, path=self.path)

    async def close(self) -> None:
        if self._server:
            self._server.close()
        if os.path.exists(self.path):
            os.unlink(self.path)
        os.rmdir(self._dir)

    async def _carry(self, local_r: asyncio.StreamReader, local_w: asyncio.StreamWriter) -> None:
        try:
            remote_r, remote_w = await asyncio.open_connection(self.host, self.port, ssl=self.tls)
        except (OSError, ssl.SSLError) as err:
            self.refusals.append(f'TLS to {self.host}:{self.port} failed: {err}')
            local_w.close()
            return
        ssl_object = remote_w.get_extra_info('ssl_object')
        peer = spiffe_id_of_cert(ssl_object.getpeercert())
        if peer != self.expect_id or ssl_object.selected_alpn_protocol() != 'h2':
            self.refusals.append(f'gRPC server SPIFFE ID {peer!r} is not {self.expect_id!r}'
                                 if peer != self.expect_id else 'gRPC server did not negotiate h2')
            remote_w.close()
            local_w.close()
            return
        self.verified.append(peer)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (OSError, ssl.SSLError):
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(local_r, remote_w), pipe(remote_r, local_w))


def grpc_host_port(url: str) -> tuple[str, int]:
    """`host:port` (as Weave advertises its gRPC interface) or `https://host:port`."""
    hostport = url.split('://', 1)[-1].split('/', 1)[0]
    host, _, port = hostport.rpartition(':')
    return host.strip('[]'), int(port)


def weave_message(skill: str, data: dict) -> Message:
    msg = Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER)
    part = msg.parts.add()
    json_format.ParseDict(data, part.data)
    msg.metadata.update({'skill': skill})
    return msg


def event_kind(e) -> str:
    return e.WhichOneof('payload')


def event_state(e) -> str | None:
    kind = event_kind(e)
    if kind == 'task':
        return state_name(e.task.status.state)
    if kind == 'status_update':
        return state_name(e.status_update.status.state)
    return None


def task_id_of(e) -> str:
    kind = event_kind(e)
    return {
        'task': lambda: e.task.id,
        'status_update': lambda: e.status_update.task_id,
        'artifact_update': lambda: e.artifact_update.task_id,
    }.get(kind, lambda: '')()


async def run_client(args) -> None:
    relays: list[SpiffeRelay] = []
    try:
        await client_steps(args, relays)
    except Exception as err:
        # A call that failed because the relay refused the server: say why (grpcio only sees a closed connection).
        refused = [r for r in relays if r.refusals and not r.verified]
        if refused:
            raise RuntimeError(refused[0].refusals[0]) from err
        raise
    finally:
        for r in relays:
            await r.close()


async def client_steps(args, relays: list[SpiffeRelay]) -> None:
    tls = client_tls(args)
    seen_ids: set[str | None] = set()

    async def check_peer(response: httpx.Response) -> None:
        peer = spiffe_id_of(response)
        seen_ids.add(peer)
        if peer != args.expect_id:
            raise RuntimeError(f'server SPIFFE ID {peer!r} is not {args.expect_id!r}')

    async with httpx.AsyncClient(verify=tls, timeout=30, event_hooks={'response': [check_peer]}) as http:
        card = await A2ACardResolver(http, args.url).get_agent_card()
        emit({'type': 'card', 'name': card.name, 'binding': args.binding})

        channels: list[grpc.aio.Channel] = []
        relay: SpiffeRelay | None = None
        if args.binding == 'GRPC':
            grpc_url = next(i.url for i in card.supported_interfaces if i.protocol_binding == 'GRPC')
            host, port = grpc_host_port(grpc_url)
            relay = SpiffeRelay(host, port, client_tls(args, ['h2']), args.grpc_expect_id or args.expect_id)
            relays.append(relay)
            await relay.start()

        def grpc_channel(url: str) -> grpc.aio.Channel:
            if relay is None or url != grpc_url:
                raise ValueError(f'no verified relay for gRPC interface {url!r}')
            # Plain HTTP/2 to the relay only; the relay's connection onwards is mTLS with the ID checked.
            channel = grpc.aio.insecure_channel(relay.target)
            channels.append(channel)
            return channel

        def client_for(streaming: bool):
            config = ClientConfig(httpx_client=http, streaming=streaming, supported_protocol_bindings=[args.binding],
                                  grpc_channel_factory=grpc_channel)
            return ClientFactory(config).create(card)

        client = client_for(True)
        blocking = client_for(False)

        # send (not streaming): the agent's answer comes back as a finished task.
        sent = [e async for e in blocking.send_message(SendMessageRequest(message=weave_message('echo', {'text': 'from python'})))]
        task = sent[-1].task
        emit({'type': 'send', 'state': state_name(task.status.state), 'id': task.id,
              'artifact': json_format.MessageToDict(task.artifacts[0]) if task.artifacts else None})

        # stream
        events = [e async for e in client.send_message(SendMessageRequest(message=weave_message('echo', {'text': 'streamed'})))]
        emit({'type': 'stream', 'kinds': [event_kind(e) for e in events],
              'states': [s for s in (event_state(e) for e in events) if s], 'id': task_id_of(events[0])})

        got = await client.get_task(GetTaskRequest(id=task.id))
        emit({'type': 'get', 'id': got.id, 'state': state_name(got.status.state)})

        listed = await client.list_tasks(ListTasksRequest(page_size=50))
        emit({'type': 'list', 'ids': [t.id for t in listed.tasks]})

        # cancel: a slow task started without waiting for it, then canceled.
        started = [e async for e in blocking.send_message(SendMessageRequest(
            message=weave_message('slow', {'ms': 20000}),
            configuration=SendMessageConfiguration(return_immediately=True)))]
        slow_id = task_id_of(started[-1])
        canceled = await client.cancel_task(CancelTaskRequest(id=slow_id))
        emit({'type': 'cancel', 'id': slow_id, 'state': state_name(canceled.status.state)})

        # subscribe: to a running slow task; cancel it and see the stream end CANCELED.
        started = [e async for e in blocking.send_message(SendMessageRequest(
            message=weave_message('slow', {'ms': 20000}),
            configuration=SendMessageConfiguration(return_immediately=True)))]
        sub_id = task_id_of(started[-1])
        states: list[str] = []
        kinds: list[str] = []
        async for e in client.subscribe(SubscribeToTaskRequest(id=sub_id)):
            kinds.append(event_kind(e))
            s = event_state(e)
            if s:
                states.append(s)
            if len(kinds) == 1:
                await client.cancel_task(CancelTaskRequest(id=sub_id))
        emit({'type': 'subscribe', 'id': sub_id, 'kinds': kinds, 'states': states})
        if relay:
            seen_ids.update(relay.verified)
            emit({'type': 'relay', 'connections': len(relay.verified), 'ids': sorted(set(relay.verified))})
        emit({'type': 'peers', 'ids': sorted(i or '' for i in seen_ids)})
        for channel in channels:
            await channel.close()


# ---------------------------------------------------------------- server


class Executor(AgentExecutor):
    """'echo <text>' completes with an artifact; 'slow' works until canceled."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        text = context.get_user_input()
        emit({'type': 'execute', 'text': text})
        task = context.current_task
        if task is None:
            task = Task(id=context.task_id, context_id=context.context_id)
            task.status.state = TaskState.TASK_STATE_SUBMITTED
            task.history.append(context.message)
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.start_work()
        if text.startswith('slow'):
            await asyncio.sleep(60)  # canceled long before
            return
        await updater.add_artifact([Part(text=f'python echo: {text}')], name='echo')
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


def grpc_caller(context: grpc.aio.ServicerContext) -> str | None:
    """The SPIFFE ID grpcio read from the call's verified client certificate (its one URI SAN)."""
    ids = [v.decode() for v in context.auth_context().get('peer_spiffe_id', [])]
    return ids[0] if len(ids) == 1 else None


class CallerReporter(DefaultGrpcServerCallContextBuilder):
    """Prints the caller's SPIFFE ID for each gRPC call that reached the A2A handler."""

    def build(self, context: grpc.aio.ServicerContext):
        emit({'type': 'request', 'via': 'grpcio', 'caller': grpc_caller(context)})
        return super().build(context)


class AllowCallers(grpc.aio.ServerInterceptor):
    """Refuses (PERMISSION_DENIED) every gRPC call whose caller SPIFFE ID is not listed.

    grpcio has verified the chain (require_client_auth); this is the ID check
    on top, before the A2A handler is entered.
    """

    def __init__(self, allowed: list[str]):
        self.allowed = set(allowed)

    async def _check(self, context: grpc.aio.ServicerContext) -> None:
        caller = grpc_caller(context)
        if caller not in self.allowed:
            emit({'type': 'refused', 'via': 'grpcio', 'caller': caller})
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f'{caller} may not call this agent')

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        check = self._check
        if handler is None:
            return None
        if handler.unary_unary:
            async def unary(request, context):
                await check(context)
                return await handler.unary_unary(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.unary_stream:
            async def stream(request, context):
                await check(context)
                async for item in handler.unary_stream(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return None  # A2AService has no client-streaming methods


class CallerH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with the client certificate's SPIFFE ID in each request's ASGI scope.

    uvicorn verifies the chain (ssl_cert_reqs=CERT_REQUIRED) but puts nothing
    of the certificate in the scope (no ASGI TLS extension), so the ID is read
    here from the connection's verified certificate: `scope['spiffe_id']`.
    """

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info('ssl_object')
        caller = spiffe_id_of_cert(ssl_object.getpeercert() if ssl_object else None)
        app = self.app

        async def with_caller(scope, receive, send):
            scope['spiffe_id'] = caller
            await app(scope, receive, send)

        self.app = with_caller


def allow_callers(app, allowed: list[str], binding: str):
    """ASGI middleware: one line per HTTP request that reached the application, and the caller-ID check.

    The card is for any verified caller; every other request from a SPIFFE ID
    not in `allowed` is answered 403 (HTTP+JSON: a google.rpc.Status body;
    JSON-RPC: an Invalid Request error, A2A having no authorization code)
    without reaching the A2A handler.
    """
    allowed_ids = set(allowed)

    async def middleware(scope, receive, send):
        if scope['type'] != 'http':
            return await app(scope, receive, send)
        caller = scope.get('spiffe_id')
        emit({'type': 'request', 'via': 'uvicorn', 'method': scope['method'], 'path': scope['path'], 'caller': caller})
        if caller in allowed_ids or scope['path'].startswith('/.well-known/'):
            return await app(scope, receive, send)
        emit({'type': 'refused', 'via': 'uvicorn', 'caller': caller})
        message = f'{caller} may not call this agent'
        body = ({'jsonrpc': '2.0', 'id': None, 'error': {'code': -32600, 'message': message}}
                if binding == 'JSONRPC' else
                {'error': {'code': 403, 'status': 'PERMISSION_DENIED', 'message': message}})
        await JSONResponse(body, status_code=403)(scope, receive, send)

    return middleware


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(('127.0.0.1', 0))
    return sock


async def run_server(args) -> None:
    sock = bound_socket()
    base = f'https://127.0.0.1:{sock.getsockname()[1]}'
    grpc_server = None
    if args.binding == 'GRPC':
        grpc_server = grpc.aio.server(interceptors=[AllowCallers(args.allow_id)])
        with open(args.key, 'rb') as k, open(args.cert, 'rb') as c, open(args.ca, 'rb') as ca:
            creds = grpc.ssl_server_credentials(
                [(k.read(), c.read())],
                root_certificates=ca.read(),
                require_client_auth=True,  # no verified client certificate, no call
            )
        grpc_port = grpc_server.add_secure_port('127.0.0.1:0', creds)
        url = f'127.0.0.1:{grpc_port}'  # host:port, as the SDKs advertise gRPC
    else:
        url = f'{base}/a2a/jsonrpc' if args.binding == 'JSONRPC' else f'{base}/a2a/rest'
    interface = AgentInterface(url=url, protocol_binding=args.binding, protocol_version='1.0')
    card = AgentCard(
        name='python sdk agent',
        description='a2a-sdk peer of the Weave interop suite',
        version='1.0.0',
        supported_interfaces=[interface],
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=['text/plain'],
        default_output_modes=['text/plain'],
        skills=[AgentSkill(id='echo', name='echo', description='echoes', tags=['echo'])],
    )
    handler = DefaultRequestHandler(agent_executor=Executor(), task_store=InMemoryTaskStore(), agent_card=card)
    # The card is always served over HTTPS (uvicorn); on GRPC the A2A methods are on the gRPC port only.
    routes = create_agent_card_routes(card)
    if args.binding == 'JSONRPC':
        routes += create_jsonrpc_routes(handler, rpc_url='/a2a/jsonrpc')
    elif args.binding == 'HTTP+JSON':
        routes += create_rest_routes(handler, path_prefix='/a2a/rest')
    else:
        a2a_pb2_grpc.add_A2AServiceServicer_to_server(GrpcHandler(handler, CallerReporter()), grpc_server)
        await grpc_server.start()
    config = uvicorn.Config(
        allow_callers(Starlette(routes=routes), args.allow_id, args.binding),
        http=CallerH11Protocol,
        log_level='warning',
        ssl_certfile=args.cert,
        ssl_keyfile=args.key,
        ssl_ca_certs=args.ca,
        ssl_cert_reqs=ssl.CERT_REQUIRED,  # no client certificate, no request
    )
    server = uvicorn.Server(config)
    emit({'type': 'listening', 'url': base, 'interface': url})

    async def stop_on_stdin_eof() -> None:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        server.should_exit = True

    asyncio.get_running_loop().create_task(stop_on_stdin_eof())
    await server.serve(sockets=[sock])
    if grpc_server:
        await grpc_server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('mode', choices=['client', 'server'])
    parser.add_argument('--url')
    parser.add_argument('--expect-id')
    parser.add_argument('--grpc-expect-id', help='expected ID of the gRPC server only (default: --expect-id)')
    parser.add_argument('--allow-id', action='append', help='server: a caller SPIFFE ID allowed (repeatable)')
    parser.add_argument('--cert', required=True)
    parser.add_argument('--key', required=True)
    parser.add_argument('--ca', required=True)
    parser.add_argument('--binding', default='JSONRPC', choices=['JSONRPC', 'HTTP+JSON', 'GRPC'])
    args = parser.parse_args()
    if args.mode == 'server' and not args.allow_id:
        parser.error('a server needs --allow-id: no caller is allowed by default')
    try:
        if args.mode == 'client':
            asyncio.run(run_client(args))
        else:
            asyncio.run(run_server(args))
    except Exception as err:  # reported as a line the test can assert on
        emit({'type': 'error', 'error': f'{type(err).__name__}: {err}'})
        sys.exit(1)


if __name__ == '__main__':
    main()
