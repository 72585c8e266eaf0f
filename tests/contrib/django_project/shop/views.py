"""Async views using the ORM, as Django allows: through sync_to_async or the a* methods."""

from asgiref.sync import sync_to_async
from django.db import connection
from django.http import HttpRequest, JsonResponse

from .models import Item


def _names_and_backend() -> tuple[list[str], int]:
    names = list(Item.objects.values_list("name", flat=True))
    return names, connection.connection.info.backend_pid


async def items(request: HttpRequest) -> JsonResponse:
    names, backend = await sync_to_async(_names_and_backend)()
    count = await Item.objects.acount()
    return JsonResponse({"names": names, "count": count, "backend": backend})


async def add_item(request: HttpRequest, name: str) -> JsonResponse:
    item = await sync_to_async(Item.objects.create)(name=name, quantity=1)
    return JsonResponse({"id": item.pk})
