from django.urls import path
from shop import views

urlpatterns = [
    path("items/", views.items),
    path("items/add/<str:name>/", views.add_item),
]
