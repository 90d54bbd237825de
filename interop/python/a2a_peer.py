"""The official Python A2A SDK (a2a-sdk) as a peer of Weave, over mTLS with SVIDs
from Weave's dev CA. Test code only; the interop suite runs it from .infra/venv.

  a2a_peer.py client --url URL --expect-id SPIFFE_ID --cert C --key K --ca CA --binding B
      Runs send, stream, get, list, cancel and subscribe against a Weave agent
      (skills "echo" and "slow") and prints one JSON line per step.
  a2a_peer.py server --cert C --key K --ca CA --binding B
      Serves an A2A agent with uvicorn requiring a client certificate; prints
      {"type":"listening","url":...} and then one JSON line per request.

Python's ssl verifies the chain against the CA file, but it only checks DNS/IP
names; the SPIFFE ID (URI SAN) of the peer is checked here on every response.
"""

import argparse
import asyncio
import json
import socket
import ssl
import sys
import uuid

import httpx
import uvicorn
from google.protobuf import json_format
from starlette.applications import Starlette

from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
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
)


def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def state_name(state: int) -> str:
    return TaskState.Name(state)


# ---------------------------------------------------------------- client


def spiffe_id_of(response: httpx.Response) -> str | None:
    stream = response.extensions.get('network_stream')
    ssl_object = stream.get_extra_info('ssl_object') if stream else None
    cert = ssl_object.getpeercert() if ssl_object else None
    uris = [v for (k, v) in (cert or {}).get('subjectAltName', ()) if k == 'URI']
    return uris[0] if len(uris) == 1 else None


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
    tls = ssl.create_default_context(cafile=args.ca)
    tls.load_cert_chain(args.cert, args.key)
    tls.check_hostname = False  # SVIDs carry a URI SAN only; the SPIFFE ID is checked below
    tls.verify_mode = ssl.CERT_REQUIRED
    seen_ids: set[str | None] = set()

    async def check_peer(response: httpx.Response) -> None:
        peer = spiffe_id_of(response)
        seen_ids.add(peer)
        if peer != args.expect_id:
            raise RuntimeError(f'server SPIFFE ID {peer!r} is not {args.expect_id!r}')

    async with httpx.AsyncClient(verify=tls, timeout=30, event_hooks={'response': [check_peer]}) as http:
        card = await A2ACardResolver(http, args.url).get_agent_card()
        emit({'type': 'card', 'name': card.name, 'binding': args.binding})

        def client_for(streaming: bool):
            config = ClientConfig(httpx_client=http, streaming=streaming, supported_protocol_bindings=[args.binding])
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
        emit({'type': 'peers', 'ids': sorted(i or '' for i in seen_ids)})


# ---------------------------------------------------------------- server


class Executor(AgentExecutor):
    """'echo <text>' completes with an artifact; 'slow' works until canceled."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        text = context.get_user_input()
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


def run_server(args) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    base = f'https://127.0.0.1:{port}'
    interface = AgentInterface(
        url=f'{base}/a2a/jsonrpc' if args.binding == 'JSONRPC' else f'{base}/a2a/rest',
        protocol_binding=args.binding,
        protocol_version='1.0',
    )
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
    routes = create_agent_card_routes(card)
    if args.binding == 'JSONRPC':
        routes += create_jsonrpc_routes(handler, '/a2a/jsonrpc')
    else:
        routes += create_rest_routes(handler, '/a2a/rest')
    app = Starlette(routes=routes)
    config = uvicorn.Config(
        app,
        log_level='warning',
        ssl_certfile=args.cert,
        ssl_keyfile=args.key,
        ssl_ca_certs=args.ca,
        ssl_cert_reqs=ssl.CERT_REQUIRED,  # no client certificate, no request
    )
    server = uvicorn.Server(config)
    emit({'type': 'listening', 'url': base})

    async def serve() -> None:
        async def stop_on_stdin_eof() -> None:
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
            server.should_exit = True

        asyncio.get_running_loop().create_task(stop_on_stdin_eof())
        await server.serve(sockets=[sock])

    asyncio.run(serve())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('mode', choices=['client', 'server'])
    parser.add_argument('--url')
    parser.add_argument('--expect-id')
    parser.add_argument('--cert', required=True)
    parser.add_argument('--key', required=True)
    parser.add_argument('--ca', required=True)
    parser.add_argument('--binding', default='JSONRPC', choices=['JSONRPC', 'HTTP+JSON', 'GRPC'])
    args = parser.parse_args()
    try:
        if args.mode == 'client':
            asyncio.run(run_client(args))
        else:
            run_server(args)
    except Exception as err:  # reported as a line the test can assert on
        emit({'type': 'error', 'error': f'{type(err).__name__}: {err}'})
        sys.exit(1)


if __name__ == '__main__':
    main()
